"""ONNX export of the LSTM/GRU/RNN/TextCNN models and of a user's own module: onnxruntime reproduces the
packed torch model at shapes the export never saw, including texts shorter than a conv kernel."""

from pathlib import Path

import numpy as np
import pytest
import torch
from _textnet_zoo import VOCAB, StackedRNN, UserCNN, one_thread, tiny  # noqa: F401
from typer.testing import CliRunner

import prunekit
from prunekit.cli import app
from prunekit.importance.groups import group_scores
from prunekit.io.textnet import save_textnet
from prunekit.prune.textnets import apply_text_plan, text_plan_from_ratios

pytest.importorskip("onnxruntime")
from prunekit.io.onnx import export_onnx, onnx_session  # noqa: E402

SEQ = 12  # traced at 2 x 12; export_onnx checks 1 x 6, 3 x 12 and 2 x 2


def _batch(batch: int, seq: int, seed: int) -> dict[str, torch.Tensor]:
    """Right-padded ids, every row a different length (down to 1 token)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (batch, seq), generator=gen)
    lengths = torch.linspace(seq, 1, batch).round().long()
    mask = (torch.arange(seq)[None] < lengths[:, None]).long()
    return {"input_ids": ids * mask, "attention_mask": mask}


def _assert_ort_matches(folder: Path, result: dict, names: list[str]) -> None:
    model = prunekit.load(folder, trust_remote_code=True)  # the folders name test classes of their own
    session = onnx_session(result["path"], threads=1)
    assert [i.name for i in session.get_inputs()] == result["inputs"] == names
    for seed, (batch, seq) in enumerate([(1, 5), (4, 17), (3, 3)]):
        inputs = {n: t for n, t in _batch(batch, seq, seed).items() if n in names}
        with torch.no_grad():
            want = model(**inputs).logits.numpy()  # the packed run prunekit measures
        got = session.run(["logits"], {k: v.numpy() for k, v in inputs.items()})[0]
        assert got.shape == want.shape and np.abs(got - want).max() <= 1e-4


@pytest.mark.parametrize(("kind", "exporter"), [
    (("lstm", 2, True), None), (("gru", 1, True), None), (("rnn", 2, False), None), (("textcnn", 1, False), None),
    (("textcnn", 1, False), "torchscript"),
])
def test_pruned_text_models_export_and_match_torch(tmp_path, kind, exporter):
    model = tiny(*kind)
    ratios = {"filters": 0.5} if kind[0] == "textcnn" else {"units": 0.5}
    apply_text_plan(model, text_plan_from_ratios(model, group_scores(model, "l2").units, embedding=0.25, **ratios))
    save_textnet(model, None, tmp_path / "m")
    result = export_onnx(tmp_path / "m", tmp_path / "m.onnx", seq_len=SEQ, exporter=exporter)
    # recurrent models default to the TorchScript exporter (see prunekit.io.onnx._text_exporter)
    want = exporter or ("dynamo" if kind[0] == "textcnn" else "torchscript")
    if want == "dynamo":
        pytest.importorskip("onnxscript")
    assert result["exporter"] == want and result["max_abs_diff"] <= 1e-4
    _assert_ort_matches(tmp_path / "m", result, ["input_ids", "attention_mask"])


def test_bilstm_exports_with_the_dynamo_exporter_too(tmp_path):
    pytest.importorskip("onnxscript")
    save_textnet(tiny("lstm", 1, True), None, tmp_path / "m")
    result = export_onnx(tmp_path / "m", tmp_path / "m.onnx", seq_len=SEQ, exporter="dynamo")
    _assert_ort_matches(tmp_path / "m", result, ["input_ids", "attention_mask"])


def test_a_users_module_exports_with_the_inputs_its_forward_takes(tmp_path):
    torch.manual_seed(0)
    net = StackedRNN()
    apply_text_plan(net, text_plan_from_ratios(net, group_scores(net, "l2").units, units=0.5))
    save_textnet(net, None, tmp_path / "m")  # records _textnet_zoo:StackedRNN, rebuilt by prunekit.load
    result = export_onnx(tmp_path / "m", tmp_path / "m.onnx", seq_len=SEQ, trust_remote_code=True)
    _assert_ort_matches(tmp_path / "m", result, ["input_ids"])  # its forward takes token ids only


def test_prunekit_export_cli_on_a_text_model(tmp_path):
    save_textnet(tiny("gru", 2, True), None, tmp_path / "m")
    result = CliRunner().invoke(app, ["export", str(tmp_path / "m"), "--onnx", str(tmp_path / "gru.onnx"),
                                      "--seq-len", str(SEQ)])
    assert result.exit_code == 0, result.output
    assert "onnxruntime vs torch max abs diff" in result.output and (tmp_path / "gru.onnx").is_file()
    result = CliRunner().invoke(app, ["export", str(tmp_path / "m"), "--onnx", str(tmp_path / "gru.onnx")])
    assert result.exit_code == 2 and "already exists" in result.output


def test_export_of_a_module_without_an_import_path_takes_module(tmp_path):
    class Local(UserCNN):  # defined in a function: the folder cannot record where to import it from
        pass

    torch.manual_seed(0)
    save_textnet(Local(), None, tmp_path / "m")
    args = ["export", str(tmp_path / "m"), "--onnx", str(tmp_path / "cnn.onnx"), "--seq-len", str(SEQ)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "pass --module" in result.output and not (tmp_path / "cnn.onnx").exists()
    result = CliRunner().invoke(app, [*args, "--module", "_textnet_zoo:UserCNN"])
    assert result.exit_code == 0, result.output
    assert [i.name for i in onnx_session(tmp_path / "cnn.onnx").get_inputs()] == ["input_ids"]
