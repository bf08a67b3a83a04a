"""Unstructured and one-shot pruning of every family users bring, with or without a table entry.

A tiny random-weight model per family (:mod:`_family_zoo`): magnitude unstructured 50 % over
:func:`prunable_weights`, and magnitude / Wanda / SparseGPT one-shot 50 % on random ids, each reaching the
target on the blocks' Linear weights (a mixture's experts included, an encoder–decoder's two stacks
included); the pruned model still runs and saves (:func:`prunekit.io.shapes.save_sparse`) and reloads
(:func:`prunekit.load`) to identical logits.
"""

from __future__ import annotations

from pathlib import Path

import _family_zoo as zoo  # tests/ is on pytest's pythonpath
import pytest
import torch

import prunekit
from prunekit.arch import find_family, layer_stacks, prunable_modules, prunable_weights
from prunekit.arch.experts import FUSED, has_fused_experts, unfused_experts
from prunekit.io.shapes import save_sparse
from prunekit.prune.calibration import as_rows
from prunekit.prune.masks import MaskSet, compute_masks
from prunekit.prune.oneshot import OneShotSettings, prune_oneshot

one_thread = zoo.one_thread  # autouse fixture
build, logits, VOCAB, ZOO = zoo.build, zoo.logits, zoo.VOCAB, zoo.ZOO


def block_weights(model: torch.nn.Module, experts: bool = False) -> dict[str, torch.Tensor]:
    """The Linear weights inside the blocks (the default prunable set), and with ``experts`` the fused
    mixture-of-experts tensors one-shot pruning also covers, by name."""
    out = {n: m.weight for n, m in prunable_modules(model).items()}
    if experts:
        out.update({n: p for n, p in model.named_parameters() if n.endswith(FUSED) and p.dim() == 3})
    return out


def block_sparsity(model: torch.nn.Module, experts: bool = False) -> float:
    weights = block_weights(model, experts).values()
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def _check_reload(model: torch.nn.Module, tmp_path: Path) -> None:
    ids = torch.randint(3, VOCAB, (2, 10), generator=torch.Generator().manual_seed(1))
    expected = logits(model, ids)
    assert torch.isfinite(expected).all()
    save_sparse(model, None, tmp_path / "saved")
    assert torch.equal(logits(prunekit.load(tmp_path / "saved"), ids), expected)


@pytest.mark.parametrize("model_type", list(ZOO))
def test_magnitude_unstructured_half(model_type, tmp_path):
    model = build(model_type)
    params = prunable_weights(model)
    MaskSet(params).update(compute_masks({n: p.abs() for n, p in params.items()}, 0.5))
    assert block_sparsity(model) == pytest.approx(0.5, abs=1e-3)
    _check_reload(model, tmp_path)


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize("model_type", list(ZOO))
def test_oneshot_half(model_type, method, tmp_path):
    model = build(model_type)
    windows = torch.randint(3, VOCAB, (4, 16), generator=torch.Generator().manual_seed(0))
    result = prune_oneshot(model, windows, OneShotSettings(method=method, sparsity=0.5))
    # every block Linear of every stack, and each expert of a mixture (on the tokens routed to it)
    assert set(result.layer_sparsity) == set(block_weights(model, experts=True))
    assert block_sparsity(model, experts=True) == pytest.approx(0.5, abs=0.01)
    _check_reload(model, tmp_path)


@pytest.mark.parametrize("model_type", list(ZOO))
def test_oneshot_two_of_four(model_type):
    model = build(model_type)
    windows = torch.randint(3, VOCAB, (4, 16), generator=torch.Generator().manual_seed(0))
    prune_oneshot(model, windows, OneShotSettings(method="wanda", sparsity=0.0, pattern="2:4"))
    for name, module in prunable_modules(model).items():
        rows = as_rows(module)
        assert ((rows != 0).reshape(rows.shape[0], -1, 4).sum(-1) <= 2).all(), name
    assert block_sparsity(model, experts=True) == pytest.approx(0.5, abs=1e-6)


def test_discovery_covers_both_stacks_of_an_encoder_decoder():
    model = build("t5")
    assert find_family(model.config) is None
    assert [name for name, _ in layer_stacks(model)] == ["encoder.block", "decoder.block"]
    names = list(prunable_modules(model))
    assert any(".EncDecAttention." in n for n in names) and any(n.startswith("encoder.") for n in names)


def test_routers_are_not_pruned_by_default():
    names = prunable_modules(build("qwen2_moe"))
    assert not any(n.endswith(("mlp.gate", "shared_expert_gate")) for n in names)
    assert any(n.endswith("shared_expert.down_proj") for n in names)


@pytest.mark.parametrize("model_type", ["mixtral", "qwen2_moe"])
def test_experts_as_linears_compute_what_the_fused_experts_do(model_type):
    model = build(model_type)
    ids = torch.randint(3, VOCAB, (2, 10), generator=torch.Generator().manual_seed(2))
    expected = logits(model, ids)
    with unfused_experts(model):
        assert not has_fused_experts(model)
        assert any(n.endswith("experts.down_proj.3") for n in prunable_modules(model))
        torch.testing.assert_close(logits(model, ids), expected)
    assert has_fused_experts(model)
    assert torch.equal(logits(model, ids), expected)
