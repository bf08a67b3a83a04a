import pytest
import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.prune import MaskSet, compute_masks


def _scores():
    torch.manual_seed(0)
    return {"a": torch.rand(10, 10), "b": torch.rand(20, 5) * 10}


def test_global_prunes_exact_fraction_across_tensors():
    scores = _scores()
    masks = compute_masks(scores, 0.5, scope="global")
    pruned = sum(int((~m).sum()) for m in masks.values())
    assert pruned == 100
    # b's scores are 10x larger, so a global ranking prunes mostly from a
    assert (~masks["a"]).sum() > (~masks["b"]).sum()
    # every kept score is >= every pruned score
    kept = torch.cat([scores[n][masks[n]] for n in scores])
    dropped = torch.cat([scores[n][~masks[n]] for n in scores])
    assert kept.min() >= dropped.max()


def test_local_prunes_same_fraction_per_tensor():
    masks = compute_masks(_scores(), 0.3, scope="local")
    assert int((~masks["a"]).sum()) == 30
    assert int((~masks["b"]).sum()) == 30


def test_row_scope_prunes_same_fraction_in_every_output_row():
    torch.manual_seed(0)
    scores = {"a": torch.rand(6, 10), "b": torch.rand(4, 20) * 100, "bias": torch.rand(10)}
    masks = compute_masks(scores, 0.5, scope="row")
    assert (masks["a"].sum(1) == 5).all() and (masks["b"].sum(1) == 10).all()
    assert masks["bias"].sum() == 5  # 1-D tensors fall back to the tensor's own ranking
    # the kept weights are each row's largest scores
    assert (scores["a"].masked_fill(~masks["a"], 2).min(1).values >= scores["a"].masked_fill(masks["a"], -1)
            .max(1).values).all()


def test_threshold_drops_below_tau():
    scores = {"a": torch.tensor([[0.1, 0.5], [0.05, 2.0]])}
    masks = compute_masks(scores, threshold=0.2)
    assert masks["a"].tolist() == [[False, True], [False, True]]


def test_previous_masks_stay_pruned_and_count():
    scores = {"a": torch.arange(10.0).view(2, 5)}
    prev = {"a": torch.ones(2, 5, dtype=torch.bool)}
    prev["a"][1, 4] = False  # the highest score was pruned before
    masks = compute_masks(scores, 0.3, previous=prev)
    assert not masks["a"][1, 4]
    assert int((~masks["a"]).sum()) == 3
    assert not masks["a"][0, 0] and not masks["a"][0, 1]


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_sparsity_out_of_range(bad):
    with pytest.raises(PrunekitError, match=r"\[0, 1\)"):
        compute_masks(_scores(), bad)


def test_needs_exactly_one_of_ratio_or_threshold():
    with pytest.raises(PrunekitError):
        compute_masks(_scores())
    with pytest.raises(PrunekitError):
        compute_masks(_scores(), 0.5, threshold=0.1)


@pytest.mark.parametrize("opt_cls", [torch.optim.AdamW, torch.optim.SGD])
def test_masks_hold_through_optimizer_steps_with_momentum_and_weight_decay(opt_cls):
    torch.manual_seed(0)
    layer = nn.Linear(16, 16)
    kwargs = {"lr": 0.1, "weight_decay": 0.1} | ({"momentum": 0.9} if opt_cls is torch.optim.SGD else {})
    opt = opt_cls(layer.parameters(), **kwargs)
    # build up momentum first, then prune: stale momentum must not revive pruned weights
    for _ in range(3):
        layer(torch.randn(4, 16)).pow(2).sum().backward()
        opt.step()
        opt.zero_grad()
    ms = MaskSet({"w": layer.weight})
    ms.update(compute_masks({"w": layer.weight.abs()}, 0.6), opt)
    pruned = ~ms.masks["w"]
    for _ in range(5):
        layer(torch.randn(4, 16)).pow(2).sum().backward()
        opt.step()
        ms.apply()
        opt.zero_grad()
        assert torch.all(layer.weight[pruned] == 0)
    assert ms.sparsity() == pytest.approx(0.6, abs=1 / 256)
    # and the kept weights did train
    assert torch.any(layer.weight[~pruned] != 0)


def test_pruned_weights_are_positive_zero():
    """-0.0 has a non-zero bit pattern: packed storage would keep it, so masks must write +0.0."""
    w = nn.Parameter(-torch.ones(4, 4))
    ms = MaskSet({"w": w})
    ms.update({"w": torch.zeros(4, 4, dtype=torch.bool)})
    assert torch.all(w.detach().view(torch.int32) == 0)


def test_prunekit_prune_stays_the_api_function_after_the_subpackage_is_imported(monkeypatch):
    """Importing prunekit.prune.* rebinds the name `prunekit.prune` to the subpackage; calling it must still prune."""
    import prunekit
    import prunekit.pipeline
    import prunekit.prune.masks  # noqa: F401

    seen = {}
    monkeypatch.setattr(prunekit.pipeline, "prune", lambda *a, **k: seen.setdefault("args", (a, k)))
    prunekit.prune("m", out="o")
    assert seen["args"] == (("m",), {"out": "o"})
