"""Low-rank factorisation: rank by ratio or energy, outputs, and a save/reload with the same outputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import prunekit
from prunekit.errors import PrunekitError
from prunekit.io.shapes import save_pruned
from prunekit.quant import LowRankLinear, LowRankSettings, low_rank_factorize, quantize_int8, save_int8
from prunekit.quant.lowrank import choose_rank, factorize


def _inputs() -> dict[str, torch.Tensor]:
    ids = torch.randint(5, 40, (2, 10), generator=torch.Generator().manual_seed(1))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _logits(model) -> torch.Tensor:
    with torch.inference_mode():
        return model(**_inputs()).logits


def test_full_rank_factorisation_is_exact():
    torch.manual_seed(0)
    linear = nn.Linear(12, 8)
    low = factorize(linear, 8)
    x = torch.randn(5, 12)
    torch.testing.assert_close(low(x), linear(x), atol=1e-5, rtol=1e-5)
    assert low.weight.shape == linear.weight.shape


def test_choose_rank_ratio_and_energy():
    s = torch.tensor([10.0, 1.0, 0.1, 0.01])
    assert choose_rank(s, 100, 100, LowRankSettings(ratio=0.5)) == 25  # half of 100·100 weights / 200 per rank
    assert choose_rank(s, 4, 4, LowRankSettings(energy=0.99)) == 1  # 100 / 101.01 of Σσ²
    assert choose_rank(s, 4, 4, LowRankSettings(energy=0.999)) == 2
    with pytest.raises(PrunekitError, match="exactly one"):
        LowRankSettings(ratio=0.5, energy=0.9).validate()
    with pytest.raises(PrunekitError, match="in \\(0, 1\\)"):
        LowRankSettings(ratio=1.5).validate()


def test_factorise_model_halves_weights(tiny_model):
    before = sum(p.numel() for p in tiny_model.bert.encoder.parameters())
    done = low_rank_factorize(tiny_model, LowRankSettings(ratio=0.5))
    after = sum(p.numel() for p in tiny_model.bert.encoder.parameters())
    assert done and all(isinstance(tiny_model.get_submodule(n), LowRankLinear) for n in done)
    assert after < 0.6 * before


def test_energy_close_to_one_keeps_outputs(tiny_model):
    want = _logits(tiny_model)
    low_rank_factorize(tiny_model, LowRankSettings(energy=0.9999))
    torch.testing.assert_close(_logits(tiny_model), want, atol=2e-3, rtol=1e-3)


def test_low_rank_save_reload_same_outputs(tiny_model, tmp_path):
    low_rank_factorize(tiny_model, LowRankSettings(ratio=0.5))
    manifest = save_pruned(tiny_model, None, tmp_path / "lr")
    assert manifest["low_rank"] and not manifest["vanilla_from_pretrained"]
    again = prunekit.load(tmp_path / "lr")
    assert torch.equal(_logits(again), _logits(tiny_model))


def test_low_rank_then_int8_save_reload(tiny_model, tmp_path):
    low_rank_factorize(tiny_model, LowRankSettings(ratio=0.5))
    q = quantize_int8(tiny_model)
    save_int8(q, None, tmp_path / "lrq")
    again = prunekit.load(tmp_path / "lrq")
    assert torch.equal(_logits(again), _logits(q))
