"""Dynamic int8: pruned zeros stay zero, outputs stay close, and a saved folder reloads bit-identically."""

from __future__ import annotations

import json

import pytest
import torch

import prunekit
from prunekit.errors import PrunekitError
from prunekit.prune.structured import StructuredPlan, apply_plan
from prunekit.quant import is_int8, quantize_int8, save_int8
from prunekit.quant.saved import WEIGHTS


def _inputs(vocab: int = 40) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (3, 12), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _logits(model, inputs) -> torch.Tensor:
    with torch.inference_mode():
        return model(**inputs).logits


def test_int8_keeps_zeros_and_outputs(tiny_model):
    layer = tiny_model.bert.encoder.layer[0].intermediate.dense
    with torch.no_grad():
        layer.weight[:, ::2] = 0.0
    q = quantize_int8(tiny_model)
    assert is_int8(q) and not is_int8(tiny_model)
    ints = q.bert.encoder.layer[0].intermediate.dense.weight().int_repr()
    assert (ints[:, ::2] == 0).all()
    diff = (_logits(q, _inputs()) - _logits(tiny_model, _inputs())).abs().max()
    assert diff < 0.05
    with pytest.raises(PrunekitError, match="already"):
        quantize_int8(q)


def test_int8_save_reload_identical(tiny_model, tmp_path):
    plan = StructuredPlan(heads={0: [1]}, ffn={1: list(range(0, 64, 3))})  # uneven widths
    apply_plan(tiny_model, plan)
    q = quantize_int8(tiny_model)
    save_int8(q, None, tmp_path / "q")
    manifest = json.loads((tmp_path / "q" / "prunekit_quant.json").read_text())
    assert manifest["embeddings"] and manifest["shapes"]["layers"][0]["q_heads"] == 1
    again = prunekit.load(tmp_path / "q")
    assert is_int8(again)
    assert torch.equal(_logits(again, _inputs()), _logits(q, _inputs()))
    float_bytes = sum(p.numel() * 4 for p in tiny_model.parameters())
    assert (tmp_path / "q" / WEIGHTS).stat().st_size < 0.6 * float_bytes  # tiny: position table and header weigh a lot


def test_int8_reload_rejects_bad_manifest(tiny_model, tmp_path):
    save_int8(quantize_int8(tiny_model), None, tmp_path / "q")
    path = tmp_path / "q" / "prunekit_quant.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "version": 99}))
    with pytest.raises(PrunekitError, match="unsupported format"):
        prunekit.load(tmp_path / "q")
