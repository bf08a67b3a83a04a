"""One-shot LM pruning: the sequential calibration engine, Wanda, SparseGPT, N:M and OWL ratios."""

from __future__ import annotations

import pytest
import torch
from _structured_zoo import VOCAB, build, one_thread  # noqa: F401 - fixture

from prunekit.arch import transformer_layers
from prunekit.errors import PrunekitError
from prunekit.prune.calibration import as_rows, capture_block_inputs, run_block, sequential
from prunekit.prune.masks import keep_n_of_m, keep_per_row, parse_pattern
from prunekit.prune.oneshot import (
    OneShotSettings,
    global_part_ratios,
    owl_block_ratios,
    prune_oneshot,
    score_quantiles,
)
from prunekit.prune.sparsegpt import sparsegpt_prune

CPU = torch.device("cpu")


def windows(n: int = 6, seq_len: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(1, VOCAB, (n, seq_len), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_blocks_see_exactly_what_the_model_feeds_them(family: str, in_place: bool) -> None:
    model = build(family)
    ids = windows()
    inputs = capture_block_inputs(model, ids, batch_size=4, device=CPU, offload=CPU)
    with torch.no_grad():
        expected = model(input_ids=ids, output_hidden_states=True).hidden_states
    _, layers = transformer_layers(model)
    for i, block in enumerate(layers):
        got = torch.cat(inputs.hidden)
        assert torch.allclose(got, expected[i], atol=1e-5), f"block {i} inputs differ"
        before = inputs.hidden
        inputs.hidden = run_block(block, inputs, CPU, in_place=in_place)
        assert (inputs.hidden is before) == in_place


def test_blocks_see_the_token_types_the_windows_carry() -> None:
    """Windows given as named inputs reach the model whole: a BERT's first block sees the token-type
    embeddings of the second text (type 1), not those of type 0."""
    model = build("bert")
    ids = windows()
    types = (torch.arange(ids.shape[1]) >= 5).long().expand_as(ids)
    inputs = capture_block_inputs(model, {"input_ids": ids, "token_type_ids": types}, batch_size=4, device=CPU,
                                  offload=CPU)
    with torch.no_grad():
        expected = model(input_ids=ids, token_type_ids=types, output_hidden_states=True).hidden_states[0]
        untyped = model(input_ids=ids, output_hidden_states=True).hidden_states[0]
    assert torch.allclose(torch.cat(inputs.hidden), expected, atol=1e-5)
    assert not torch.allclose(expected, untyped, atol=1e-3)


def test_masks_per_row_and_n_of_m() -> None:
    scores = torch.rand(5, 16)
    keep = keep_per_row(scores, 0.25)
    assert (keep.sum(1) == 12).all()
    kept_min = scores.masked_fill(~keep, 9).min(1).values
    dropped_max = scores.masked_fill(keep, -9).max(1).values
    assert (kept_min >= dropped_max).all()  # each row keeps its own largest scores
    keep = keep_n_of_m(scores, 2, 4)
    assert (keep.view(5, 4, 4).sum(2) == 2).all()
    kept_min = scores.view(5, 4, 4).masked_fill(~keep.view(5, 4, 4), 9).min(2).values
    dropped_max = scores.view(5, 4, 4).masked_fill(keep.view(5, 4, 4), -9).max(2).values
    assert (kept_min >= dropped_max).all()
    assert parse_pattern("4:8") == (4, 8)
    for bad in ("2-4", "4:2", "0:4"):
        with pytest.raises(PrunekitError):
            parse_pattern(bad)
    with pytest.raises(PrunekitError, match="multiple of 4"):
        keep_n_of_m(torch.rand(3, 10), 2, 4)


def _correlated_inputs(n: int, width: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(width, width, generator=g) / width**0.5
    scale = torch.exp(torch.randn(width, generator=g))  # uneven channel norms, as in LLMs
    return (torch.randn(n, width, generator=g) @ mix) * scale


@pytest.mark.parametrize("pattern", [None, (2, 4)])
def test_sparsegpt_reconstructs_better_than_masking(pattern) -> None:
    x = _correlated_inputs(512, 64)
    w = torch.randn(24, 64)
    h = 2 * x.t() @ x / len(x)
    new, keep = sparsegpt_prune(w, h, sparsity=0.5, pattern=pattern, block_size=32)
    assert torch.equal(new == 0, ~keep) or (new[~keep] == 0).all()
    assert abs(float(keep.float().mean()) - 0.5) < 1e-6
    if pattern:
        assert (keep.view(24, 16, 4).sum(2) == 2).all()
    norms = (x * x).sum(0)
    scores = w.abs() * norms.sqrt()
    wanda_keep = keep_n_of_m(scores, *pattern) if pattern else keep_per_row(scores, 0.5)
    err_sparsegpt = (x @ new.t() - x @ w.t()).pow(2).sum()
    err_wanda = (x @ (w * wanda_keep).t() - x @ w.t()).pow(2).sum()
    err_magnitude = (x @ (w * keep_per_row(w.abs(), 0.5)).t() - x @ w.t()).pow(2).sum()
    assert err_sparsegpt < err_wanda < err_magnitude


def test_sparsegpt_at_zero_sparsity_changes_nothing() -> None:
    x = _correlated_inputs(256, 32)
    w = torch.randn(8, 32)
    new, keep = sparsegpt_prune(w, 2 * x.t() @ x / 256, sparsity=0.0)
    assert keep.all() and torch.allclose(new, w, atol=1e-5)


def test_owl_ratios_keep_the_average_and_the_band() -> None:
    ratios = owl_block_ratios([0.01, 0.05, 0.02, 0.10], target=0.5, lam=0.08)
    assert abs(sum(ratios) / 4 - 0.5) < 1e-9
    assert max(ratios) - min(ratios) == pytest.approx(0.16)
    assert ratios[3] == min(ratios)  # most outliers → least pruned
    assert owl_block_ratios([0.2, 0.2], 0.5, 0.08) == [0.5, 0.5]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize("pattern", [None, "2:4"])
def test_prune_oneshot_hits_the_target_everywhere(family: str, method: str, pattern: str | None) -> None:
    model = build(family)
    settings = OneShotSettings(method=method, sparsity=0.5, pattern=pattern, layer_ratios="uniform", batch_size=4)
    result = prune_oneshot(model, windows(), settings)
    prefix, layers = transformer_layers(model)
    linears = {f"{prefix}.{i}.{n}": as_rows(m) for i, b in enumerate(layers) for n, m in b.named_modules()
               if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D"}
    assert set(result.layer_sparsity) == set(linears)
    for name, w in linears.items():
        zero = float((w == 0).float().mean())
        assert zero == pytest.approx(0.5, abs=0.02), name
        assert result.layer_sparsity[name] == pytest.approx(zero, abs=1e-6)
        if pattern:
            assert ((w != 0).view(w.shape[0], -1, 4).sum(2) <= 2).all(), name


def test_wanda_and_sparsegpt_beat_magnitude_on_the_calibration_loss() -> None:
    ids = windows(8, 16, seed=3)

    def loss(method: str) -> float:
        model = build("llama")
        prune_oneshot(model, ids, OneShotSettings(method=method, sparsity=0.6, layer_ratios="uniform"))
        with torch.no_grad():
            out = model(input_ids=ids)
            dense = build("llama")(input_ids=ids)
        return float((out.logits - dense.logits).pow(2).mean())

    assert loss("sparsegpt") < loss("magnitude")
    assert loss("wanda") < loss("magnitude")


def test_owl_changes_block_ratios_but_not_the_total() -> None:
    model = build("llama")
    result = prune_oneshot(model, windows(), OneShotSettings(method="wanda", sparsity=0.5, layer_ratios="owl",
                                                           owl_lambda=0.1))
    assert result.owl_outlier_ratios is not None and len(result.block_targets) == 3
    assert sum(result.block_targets) / 3 == pytest.approx(0.5, abs=1e-6)
    assert len(set(round(t, 6) for t in result.block_targets)) > 1


def test_global_ratios_put_one_threshold_on_all_parts() -> None:
    g = torch.Generator().manual_seed(0)
    low, high = 2 * torch.rand(40_000, generator=g), 1 + 2 * torch.rand(120_000, generator=g)  # U[0,2], U[1,3]
    ratios = global_part_ratios([score_quantiles([low]), score_quantiles([high])], target=0.5)
    # threshold t with 40k·t/2 + 120k·(t−1)/2 = 80k → t = 1.75: 87.5 % of the low part, 37.5 % of the high one
    assert ratios == pytest.approx([0.875, 0.375], abs=0.01)
    assert global_part_ratios([score_quantiles([low]), score_quantiles([low.clone()])], 0.3) == pytest.approx(
        [0.3, 0.3], abs=0.01)


def test_global_layer_ratios_split_blocks_but_keep_the_total() -> None:
    model = build("llama")
    result = prune_oneshot(model, windows(), OneShotSettings(method="wanda", sparsity=0.5, layer_ratios="global"))
    assert result.mlp_targets is not None and len(result.block_targets) == len(result.mlp_targets) == 3
    prefix, layers = transformer_layers(model)
    linears = [as_rows(m) for b in layers for m in b.modules() if isinstance(m, torch.nn.Linear)]
    zeros = sum(int((w == 0).sum()) for w in linears) / sum(w.numel() for w in linears)
    assert zeros == pytest.approx(0.5, abs=0.02)
    assert len({round(t, 3) for t in [*result.block_targets, *result.mlp_targets]}) > 1


def test_sequential_without_true_sequential_runs_each_block_once_for_stats() -> None:
    model = build("llama")
    seen: list[tuple[int, str]] = []
    sequential(model, windows(), lambda i, n, m, s: seen.append((i, n)), hessian=False, true_sequential=False)
    assert [i for i, _ in seen] == sorted(i for i, _ in seen) and len(seen) == 3 * 7


def test_bad_settings_fail_before_any_change() -> None:
    model = build("llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for settings, match in [
        (OneShotSettings(method="obs"), "unknown one-shot method"),
        (OneShotSettings(sparsity=1.0), r"\[0, 1\)"),
        (OneShotSettings(pattern="2:4", sparsity=0.7), "fixes the sparsity"),
        (OneShotSettings(pattern="3:7", sparsity=0.0), "multiple of 7"),
    ]:
        with pytest.raises(PrunekitError, match=match):
            prune_oneshot(model, windows(), settings)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_dense_targets_correct_the_drift_of_earlier_blocks() -> None:
    ids = windows(8, 16, seed=5)
    with torch.no_grad():
        reference = build("llama")(input_ids=ids).logits

    def error(dense_targets: bool) -> float:
        model = build("llama")
        prune_oneshot(model, ids, OneShotSettings(method="sparsegpt", pattern="2:4", dense_targets=dense_targets,
                                                  layer_ratios="uniform"))
        with torch.no_grad():
            return float((model(input_ids=ids).logits - reference).pow(2).mean())

    assert error(True) < error(False)


@pytest.mark.parametrize("method", ["sparsegpt", "wanda"])
def test_refit_keeps_the_mask_and_lowers_the_error(method: str) -> None:
    ids = windows(8, 16, seed=4)
    with torch.no_grad():
        reference = build("llama")(input_ids=ids).logits

    def run(refit: bool) -> tuple[float, dict[str, torch.Tensor]]:
        model = build("llama")
        prune_oneshot(model, ids, OneShotSettings(method=method, sparsity=0.6, layer_ratios="uniform", refit=refit,
                                                  true_sequential=False))
        prefix, layers = transformer_layers(model)
        masks = {f"{i}.{n}": as_rows(m) != 0 for i, b in enumerate(layers) for n, m in b.named_modules()
                 if isinstance(m, torch.nn.Linear)}
        with torch.no_grad():
            return float((model(input_ids=ids).logits - reference).pow(2).mean()), masks

    plain, plain_masks = run(False)
    refit, refit_masks = run(True)
    assert refit < plain
    if method == "wanda":  # the refit only moves kept weights: block 0 sees the same inputs, so the same mask
        first = [k for k in plain_masks if k.startswith("0.")]
        assert first and all(torch.equal(plain_masks[k], refit_masks[k]) for k in first)
    assert OneShotSettings(method="sparsegpt").refits and not OneShotSettings(method="wanda").refits


def test_linears_fed_one_tensor_share_one_set_of_statistics() -> None:
    """q/k/v (and gate/up) see the same activation: one Hessian serves them, equal to a separate one's."""
    from prunekit.prune.calibration import collect_stats, sublayer_groups

    model = build("llama")
    inputs = capture_block_inputs(model, windows(), batch_size=4, device=CPU, offload=CPU)
    _, layers = transformer_layers(model)
    block = layers[0]
    names = [n for g in sublayer_groups(model, block) for n in g]
    stats = collect_stats(block, names, inputs, CPU, hessian=True)
    q, k, v, o, gate, up, down = names
    assert stats[q] is stats[k] is stats[v] and stats[gate] is stats[up]
    assert len({id(stats[n]) for n in names}) == 4
    alone = collect_stats(block, [k], inputs, CPU, hessian=True)[k]
    assert torch.allclose(stats[q].xtx, alone.xtx) and stats[q].tokens == alone.tokens == 6 * 12


def test_sequential_skips_the_last_blocks_output_pass() -> None:
    model = build("llama")
    _, layers = transformer_layers(model)
    calls = [0] * len(layers)
    for i, block in enumerate(layers):
        block.register_forward_hook(lambda *_a, i=i: calls.__setitem__(i, calls[i] + 1))
    sequential(model, windows(), lambda *a: None, hessian=False, true_sequential=False, batch_size=3)
    # a stats pass stops before the block returns; each block but the last then runs once per batch
    assert calls[:-1] == [2] * (len(layers) - 1) and calls[-1] == 0


def test_dense_stream_runs_each_block_once_on_the_unpruned_models_activations() -> None:
    """--calibration dense: statistics come from the unpruned model (one pass per block), so they do
    not depend on how earlier blocks were pruned, and every block still gets pruned."""
    from prunekit.prune.calibration import InputStats

    model = build("llama")
    ids = windows()
    with torch.no_grad():
        expected = model(input_ids=ids, output_hidden_states=True).hidden_states
    _, layers = transformer_layers(model)
    calls = [0] * len(layers)
    for i, block in enumerate(layers):
        block.register_forward_hook(lambda *_a, i=i: calls.__setitem__(i, calls[i] + 1))
    got: dict[int, InputStats] = {}

    def zero_everything(i: int, name: str, module: torch.nn.Module, stats: InputStats) -> None:
        if name.endswith("q_proj"):
            got[i] = stats
        with torch.no_grad():
            as_rows(module).zero_()  # a pruned stream would now feed the next block something else

    sequential(model, ids, zero_everything, hessian=False, stream="dense", batch_size=3)
    assert calls == [2] * len(layers)
    for i, block in enumerate(layers):
        with torch.no_grad():
            x = block.input_layernorm(expected[i]).reshape(-1, expected[i].shape[-1])
        assert torch.allclose(got[i].sq_norms, (x * x).sum(0), rtol=1e-4, atol=1e-5), f"block {i}"


def test_dense_calibration_prunes_to_target_and_refuses_what_needs_the_pruned_stream() -> None:
    model = build("llama")
    result = prune_oneshot(model, windows(), OneShotSettings(method="wanda", sparsity=0.5, calibration="dense"))
    assert all(abs(s - 0.5) < 0.02 for s in result.layer_sparsity.values())
    for bad in ({"calibration": "both"}, {"calibration": "dense", "dense_targets": True},
                {"calibration": "dense", "true_sequential": True}):
        with pytest.raises(PrunekitError):
            OneShotSettings(method="sparsegpt", **bad).check()


@pytest.mark.parametrize(("spec", "stream"), [
    ({"method": "wanda"}, "dense"),  # mask only: the unpruned model's statistics, one pass
    ({"method": "wanda", "refit": True}, "pruned"),  # weights updated: must see earlier blocks' error
    ({"method": "wanda", "true_sequential": True}, "pruned"),
    ({"method": "sparsegpt"}, "pruned"),
    ({"method": "sparsegpt", "calibration": "dense", "true_sequential": False}, "dense"),
    ({"method": "wanda", "calibration": "sequential"}, "pruned"),
])
def test_default_calibration_stream_follows_whether_weights_are_updated(spec: dict, stream: str) -> None:
    settings = OneShotSettings(**spec)
    settings.check()
    assert settings.stream == stream


@pytest.mark.parametrize("pattern", [None, (2, 4)])
def test_sparsegpt_prunes_again_what_an_earlier_step_pruned(pattern) -> None:
    """Iterative steps: the earlier zeros stay zero although the update of earlier columns would revive them."""
    x = _correlated_inputs(512, 64)
    h = 2 * x.t() @ x / len(x)
    first, keep1 = sparsegpt_prune(torch.randn(24, 64), h, sparsity=0.25 if pattern is None else 0.5,
                                   pattern=(3, 4) if pattern else None, block_size=32)
    second, keep2 = sparsegpt_prune(first, h, sparsity=0.5, pattern=pattern, block_size=32, pruned_before=~keep1)
    assert not (keep2 & ~keep1).any() and (second[~keep1] == 0).all()
    assert abs(float(keep2.float().mean()) - 0.5) < 1e-6
    unguarded, keep3 = sparsegpt_prune(first, h, sparsity=0.5, pattern=pattern, block_size=32)
    assert (keep3 & ~keep1).any(), "without the guard some earlier zeros come back (else this test tests nothing)"


@pytest.mark.parametrize(("family", "names"), [("llama", ("self_attn.q_proj", "mlp.down_proj")),
                                               ("gpt2", ("attn.c_attn", "mlp.c_proj"))])
def test_prune_oneshot_only_touches_the_named_linears_and_keeps_earlier_zeros(family: str, names: tuple) -> None:
    """A classifier's --prunable picks the Linears; keep-masks as the weights are stored (GPT-2: transposed)."""
    model = build(family)
    prefix, _ = transformer_layers(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    only = {f"{prefix}.0.{names[0]}", f"{prefix}.1.{names[1]}"}
    first = prune_oneshot(model, windows(), OneShotSettings(method="sparsegpt", sparsity=0.3), only=only)
    assert set(first.layer_sparsity) == only
    for name, p in model.named_parameters():
        owner, _, kind = name.rpartition(".")
        assert torch.equal(p, before[name]) == (owner not in only or kind == "bias"), name
    keep = {n: model.get_submodule(n).weight != 0 for n in only}
    prune_oneshot(model, windows(seed=1), OneShotSettings(method="sparsegpt", sparsity=0.6), only=only,
                  previous=keep)
    for n in only:
        w = model.get_submodule(n).weight
        assert (w[~keep[n]] == 0).all() and float((w == 0).float().mean()) == pytest.approx(0.6, abs=0.02)
