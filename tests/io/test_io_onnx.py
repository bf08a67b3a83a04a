"""ONNX export: onnxruntime reproduces torch at shapes the export never saw, for plain and unevenly pruned models.

The dynamo exporter takes ~5-10 s per tiny model on a busy 2-core machine, the TorchScript one well
under a second, so each model is exported once (module fixtures) and the two exporters share the cases.
"""

import importlib.util
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertModel, BertTokenizer

from prunekit.errors import PrunekitError
from prunekit.prune import StructuredPlan, apply_plan

pytest.importorskip("onnxruntime")
import _structured_zoo as zoo  # tests/ is on pytest's pythonpath

import prunekit.io.onnx as onnx_module  # noqa: E402
from prunekit.io.onnx import export_onnx, onnx_latency, onnx_session  # noqa: E402
from prunekit.io.shapes import save_pruned  # noqa: E402
from prunekit.report.measure import bert_like_inputs  # noqa: E402

one_thread = zoo.one_thread  # autouse fixture
needs_onnxscript = pytest.mark.skipif(importlib.util.find_spec("onnxscript") is None, reason="onnxscript missing")
SEQ = 16  # traced as 2 x 16 and verified inside export_onnx at 1 x 8 and 3 x 16
NEW_SHAPES = [(1, 5), (4, 11)]  # the tests' own check uses shapes export_onnx never touched
KEYS = {"path", "size_bytes", "max_abs_diff", "opset", "inputs", "seconds", "exporter"}
UNEVEN = {  # different head counts in every layer; LLaMA keeps GQA (4 query heads on 2 kv heads)
    "bert": StructuredPlan(heads={0: [1, 3], 1: [0], 2: [0, 1, 2]}, ffn={0: list(range(0, 48, 2)), 2: [1, 4, 9]},
                           layers=[0, 2], hidden=list(range(0, 32, 2))),
    "llama": StructuredPlan(heads={0: [2, 3], 1: [0, 3], 2: [0, 1, 2, 3]}, ffn={0: list(range(0, 48, 2))},
                            layers=[0, 2], hidden=list(range(0, 32, 2))),
}


def _tokenizer() -> BertTokenizer:
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad"]
    return BertTokenizer(vocab={w: i for i, w in enumerate(words)})


def _export_once(tmp_path_factory, name: str, model: torch.nn.Module, pruned: bool, exporter: str):
    """Save ``model`` (plain save_pretrained, or prunekit's shapes format) and export it with one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp(name)
        tok = _tokenizer() if "ForSequenceClassification" in type(model).__name__ else None
        if pruned:
            save_pruned(model, tok, root / "model")
        else:
            model.save_pretrained(root / "model")
            if tok is not None:
                tok.save_pretrained(root / "model")
        result = export_onnx(root / "model", root / "onnx" / "model.onnx", seq_len=SEQ, exporter=exporter)
    finally:
        torch.set_num_threads(threads)
    return model, result


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    pytest.importorskip("onnxscript")
    return _export_once(tmp_path_factory, "bert", zoo.build("bert"), False, "dynamo")


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return _export_once(tmp_path_factory, "llama", zoo.build("llama"), False, "torchscript")


def _batch(names: list[str], batch: int, seq: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, zoo.VOCAB, (batch, seq), generator=gen)
    mask = torch.ones_like(ids)
    mask[1:, seq - 2 :] = 0  # right padding in every row but the first
    segments = (torch.arange(seq) >= 3).long().repeat(batch, 1)
    inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": segments}
    return {n: inputs[n] for n in names}


def _assert_ort_matches(model: torch.nn.Module, result: dict) -> None:
    session = onnx_session(result["path"], threads=1)
    assert [i.name for i in session.get_inputs()] == result["inputs"]
    assert all(isinstance(d, str) for i in session.get_inputs() for d in i.shape)  # batch and sequence are symbolic
    for seed, (batch, seq) in enumerate(NEW_SHAPES):
        inputs = _batch(result["inputs"], batch, seq, seed)
        with torch.no_grad():
            want = model(**inputs).logits.numpy()
        got = session.run(["logits"], {k: v.numpy() for k, v in inputs.items()})[0]
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-4


def _assert_written_cleanly(result: dict) -> None:
    path = Path(result["path"])
    assert set(result) == KEYS
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp folder, no external data
    assert result["size_bytes"] == path.stat().st_size > 0
    assert result["max_abs_diff"] <= 1e-4 and result["opset"] >= 17


@needs_onnxscript
def test_bert_classifier_dynamo(bert):
    model, result = bert
    assert result["exporter"] == "dynamo"
    assert result["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]  # the BERT tokenizer makes them
    _assert_written_cleanly(result)
    _assert_ort_matches(model, result)


def test_llama_gqa_causal_lm_torchscript(llama):
    model, result = llama
    assert result["exporter"] == "torchscript" and result["inputs"] == ["input_ids", "attention_mask"]
    _assert_written_cleanly(result)
    _assert_ort_matches(model, result)  # logits at every position: batch x sequence x vocab


@pytest.mark.parametrize("family, exporter", [
    ("bert", "torchscript"),
    pytest.param("llama", "dynamo", marks=needs_onnxscript),
])
def test_uneven_heads_per_layer(family, exporter, tmp_path_factory):
    pruned = apply_plan(zoo.build(family), UNEVEN[family])
    widths = [m.out_features for n, m in pruned.named_modules() if n.endswith(("q_proj", "attention.self.query"))]
    assert len(set(widths)) == len(widths) == 2  # two layers left, with different head counts
    model, result = _export_once(tmp_path_factory, f"uneven-{family}", pruned, True, exporter)
    assert result["exporter"] == exporter
    _assert_written_cleanly(result)
    _assert_ort_matches(model, result)


def test_refuses_to_overwrite_unless_forced(llama, tmp_path):
    model_dir = Path(llama[1]["path"]).parents[1] / "model"
    path = tmp_path / "model.onnx"
    path.write_bytes(before := Path(llama[1]["path"]).read_bytes())
    with pytest.raises(PrunekitError, match="already exists"):
        export_onnx(model_dir, path, seq_len=SEQ, exporter="torchscript")
    assert path.read_bytes() == before
    again = export_onnx(model_dir, path, seq_len=8, exporter="torchscript", force=True, verify=False)
    assert again["max_abs_diff"] is None and [p.name for p in path.parent.iterdir()] == [path.name]


def test_failed_check_writes_nothing(llama, tmp_path):
    model_dir = Path(llama[1]["path"]).parents[1] / "model"
    with pytest.raises(PrunekitError, match="nothing was written"):
        export_onnx(model_dir, tmp_path / "out.onnx", seq_len=8, exporter="torchscript", atol=0.0, rtol=-1.0)
    assert list(tmp_path.iterdir()) == []


def test_bad_folders_are_user_errors(tmp_path):
    with pytest.raises(PrunekitError, match="no such folder"):
        export_onnx(tmp_path / "missing", tmp_path / "a.onnx")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PrunekitError, match="no config.json"):
        export_onnx(tmp_path / "empty", tmp_path / "a.onnx")
    torch.manual_seed(0)
    BertModel(zoo.build("bert").config).save_pretrained(tmp_path / "encoder")
    with pytest.raises(PrunekitError, match="neither a sequence classifier nor a causal LM"):
        export_onnx(tmp_path / "encoder", tmp_path / "a.onnx")
    with pytest.raises(PrunekitError, match="seq_len"):
        export_onnx(tmp_path / "encoder", tmp_path / "a.onnx", seq_len=1)
    with pytest.raises(PrunekitError, match="is a folder"):
        export_onnx(tmp_path / "encoder", tmp_path / "empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "encoder"]


def test_onnx_latency_like_measure_latency(llama, tmp_path, monkeypatch):
    path = llama[1]["path"]
    make = bert_like_inputs(zoo.VOCAB)  # gives token_type_ids too: the graph does not take them, so they are dropped
    lat = onnx_latency(path, make, batch_sizes=(1, 2), seq_len=8, repeats=2, threads=1)
    assert list(lat) == ["batch_1", "batch_2"]

    class Slowed:  # the same session, 30 ms slower per call: a sleep only lengthens a call
        def __init__(self, session) -> None:
            self.session = session

        def get_inputs(self):
            return self.session.get_inputs()

        def run(self, *args):
            time.sleep(0.03)
            return self.session.run(*args)

    monkeypatch.setattr(onnx_module, "onnx_session", lambda *a, **k: Slowed(onnx_session(*a, **k)))
    slow = onnx_latency(path, make, batch_sizes=(1, 2), seq_len=8, repeats=2, threads=1)
    assert all(slow[k] >= 30.0 and slow[k] > lat[k] for k in lat), (slow, lat)  # in ms, and it orders runners
    monkeypatch.undo()
    with pytest.raises(PrunekitError, match="needs inputs"):
        onnx_latency(path, lambda b, s: {"input_ids": torch.zeros(b, s, dtype=torch.long)}, repeats=1)
    with pytest.raises(PrunekitError, match="does not exist"):
        onnx_session(tmp_path / "nope.onnx")
