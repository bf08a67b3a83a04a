"""b-bit fake quantisation follows its documented formula and keeps pruned zeros."""

from __future__ import annotations

import pytest
import torch

from prunekit.errors import PrunekitError
from prunekit.quant import fake_quant_size_bytes, fake_quantize, fake_quantize_tensor


def test_formula_by_hand():
    w = torch.tensor([[1.0, -0.6, 0.2, 0.0], [0.0, 0.0, 0.0, 0.0]])
    got = fake_quantize_tensor(w, 2)  # q_max 1, scale 1: round(w) clamped to ±1
    assert torch.equal(got, torch.tensor([[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
    got4 = fake_quantize_tensor(w, 4)  # q_max 7, scale 1/7
    assert torch.allclose(got4[0], torch.round(w[0] * 7) / 7)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_levels_zeros_and_error(bits):
    torch.manual_seed(0)
    w = torch.randn(16, 32)
    w[:, :8] = 0
    q = fake_quantize_tensor(w, bits)
    assert (q[:, :8] == 0).all()
    assert all(row.unique().numel() <= 2 ** bits - 1 for row in q)
    scale = w.abs().amax(1, keepdim=True) / (2 ** (bits - 1) - 1)
    assert ((q - w).abs() <= scale / 2 + 1e-6).all()


def test_model_and_size(tiny_model):
    done = fake_quantize(tiny_model, 4)
    assert done
    w = tiny_model.get_submodule(next(iter(done))).weight
    assert all(row.unique().numel() <= 15 for row in w)
    full = sum(t.numel() * 4 for t in tiny_model.state_dict().values())
    assert fake_quant_size_bytes(tiny_model, done, 4) < full
    with pytest.raises(PrunekitError, match="2…8"):
        fake_quantize(tiny_model, 9)
