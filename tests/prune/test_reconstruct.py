"""Structured LM pruning without training: calibrated scores, least squares refit, physical removal."""

from __future__ import annotations

import torch
from _structured_zoo import VOCAB, build, one_thread  # noqa: F401 - fixture

from prunekit.prune.reconstruct import calibrated_scores, least_squares_columns, plan_lm, reconstruct, refit_kept
from prunekit.prune.structured import apply_plan


def _windows(n: int = 8, seq: int = 16) -> torch.Tensor:
    return torch.randint(1, VOCAB, (n, seq), generator=torch.Generator().manual_seed(0))


def test_least_squares_is_exact_when_the_removed_inputs_are_redundant() -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(400, 6, generator=g)
    x = torch.cat([base, base[:, :2] @ torch.randn(2, 2, generator=g)], dim=1)  # columns 6, 7 depend on 0, 1
    w = torch.randn(5, 8, generator=g)
    keep = torch.arange(6)
    new = least_squares_columns(w, x.t() @ x, keep, damp=1e-9)
    assert torch.allclose(x[:, keep] @ new.t(), x @ w.t(), atol=1e-3)
    assert not torch.allclose(x[:, keep] @ w[:, keep].t(), x @ w.t(), atol=1e-1)


def test_refit_kept_solves_each_rows_own_least_squares_problem() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 12, generator=g) @ torch.randn(12, 12, generator=g)  # correlated inputs
    w = torch.randn(4, 12, generator=g)
    keep = torch.rand(4, 12, generator=g) > 0.5  # a different kept set in every row
    h = x.t() @ x
    start = w * keep
    new, steps = refit_kept(start, w, h, keep, damp=1e-8, iters=200, tol=1e-10)
    assert torch.equal(new[~keep], torch.zeros(int((~keep).sum())))
    for r in range(4):
        s = keep[r]
        exact = torch.linalg.lstsq(x[:, s].double(), (x @ w[r]).double().unsqueeze(1)).solution.squeeze(1)
        assert torch.allclose(new[r, s].double(), exact, atol=1e-3), r
    err = (x @ (new - w).t()).pow(2).sum()
    assert err < (x @ (start - w).t()).pow(2).sum() and steps <= 200


def test_scores_cover_every_group() -> None:
    model = build("llama")
    scores = calibrated_scores(model, _windows())
    assert set(scores.heads) == {0, 1, 2} and scores.heads[0].shape == (4,) and scores.kv[0].shape == (2,)
    assert scores.ffn[1].shape == (48,) and scores.layers.shape == (3,)
    assert (scores.ffn[1] >= 0).all() and (scores.layers > 0).all()


def _error(model, reference, ids) -> float:
    with torch.no_grad():
        return float((model(input_ids=ids).logits - reference).pow(2).mean())


def test_reconstruction_lowers_the_error_and_removal_is_exact() -> None:
    ids = _windows()
    dense = build("gpt2")
    with torch.no_grad():
        reference = dense(input_ids=ids).logits
    plan = plan_lm(dense, calibrated_scores(dense, ids), heads=0.5, ffn=0.5)
    plain = apply_plan(build("gpt2"), plan)
    fitted = build("gpt2")
    reconstruct(fitted, ids, plan)
    with torch.no_grad():
        before_removal = fitted(input_ids=ids).logits
    apply_plan(fitted, plan)
    with torch.no_grad():
        assert torch.allclose(fitted(input_ids=ids).logits, before_removal, atol=1e-4)
    assert _error(fitted, reference, ids) < _error(plain, reference, ids)
