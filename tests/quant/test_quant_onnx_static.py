"""ONNX Runtime static int8: calibrated on real batches, accuracy close to torch, int8 weights in the file."""

from __future__ import annotations

import pytest

pytest.importorskip("onnxruntime")

import numpy as np  # noqa: E402
import onnx  # noqa: E402

from prunekit.config import DataOptions  # noqa: E402
from prunekit.errors import PrunekitError  # noqa: E402
from prunekit.pipeline import open_workbench  # noqa: E402
from prunekit.quant.onnx_static import evaluate_onnx, export_static_int8  # noqa: E402


def test_static_int8_close_to_torch(trained_tiny, tmp_path):
    folder, csv = trained_tiny
    wb = open_workbench(str(folder), DataOptions(str(csv)))
    result = export_static_int8(folder, tmp_path / "m.int8.onnx", wb.validation, wb.tokenizer, calib_batches=2,
                                batch_size=8, seq_len=16)
    assert result["size_bytes"] < result["float_size_bytes"]
    graph = onnx.load(result["path"]).graph
    assert any(t.data_type == onnx.TensorProto.INT8 for t in graph.initializer)
    torch_metrics, torch_logits = wb.evaluate("test")
    metrics, logits = evaluate_onnx(result["path"], wb.test, wb.tokenizer)
    assert logits.shape == torch_logits.shape
    assert abs(metrics["accuracy"] - torch_metrics["accuracy"]) <= 0.1
    assert np.mean(logits.argmax(-1) == torch_logits.argmax(-1)) >= 0.85
    with pytest.raises(PrunekitError, match="exists"):
        export_static_int8(folder, result["path"], wb.validation, wb.tokenizer)
