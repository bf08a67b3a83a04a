"""End to end on a tiny CSV through the CLI: train an LSTM/GRU/TextCNN, prune it structurally or not, reload."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from _plain import assert_reproduces
from conftest import tiny_rows
from typer.testing import CliRunner

import prunekit
from prunekit.cli import app
from prunekit.config import DataOptions
from prunekit.io.textnet import load_into

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A stacked BiGRU and a TextCNN trained by `prunekit finetune --arch` on the tiny sentiment CSV."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("textnets")
    csv = root / "tiny.csv"
    tiny_rows().to_csv(csv, index=False)
    out = {"csv": csv}
    for arch, extra in (("bigru", ["--num-layers", "2", "--width", "12"]), ("textcnn", ["--width", "8"])):
        out[arch] = root / arch
        result = runner.invoke(app, ["finetune", "--arch", arch, "-d", str(csv), "--out", str(out[arch]),
                                     "--epochs", "15", "--lr", "1e-2", "--batch-size", "16", "--embed-dim", "16",
                                     "--no-latency", *extra])
        assert result.exit_code == 0, result.output
    yield out
    torch.set_num_threads(n)


def _prune(trained, model: str, out: Path, *flags: str):
    return runner.invoke(app, ["prune", "-m", str(trained[model]), "-d", str(trained["csv"]), "--out", str(out),
                               "--no-latency", "--finetune-epochs", "1", *flags])


def test_trained_from_scratch_learns_the_tiny_task(trained):
    report = json.loads((trained["textcnn"] / "report.json").read_text())
    assert report["stages"][-1]["metrics"]["accuracy"] >= 0.75
    assert report["settings"]["arch"]["arch"] == "textcnn" and report["settings"]["train"]["lr"] == 1e-2


def test_prune_units_then_reload_and_evaluate_match(trained, tmp_path):
    out = tmp_path / "gru-half"
    result = _prune(trained, "bigru", out, "--units", "0.5", "--embedding", "0.25", "--importance", "taylor")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["shapes"]["widths"] == {"embedding": 12, "rnn.l0": 6, "rnn.l0_reverse": 6, "rnn.l1": 6,
                                          "rnn.l1_reverse": 6}
    assert report["reload_check"]["loader"] == "prunekit.load" and report["reload_check"]["max_abs_logit_diff"] == 0
    base, final = report["stages"][0], report["stages"][-1]
    assert final["params_total"] < base["params_total"] / 2 and final["macs_per_token"] < base["macs_per_token"] / 2
    model = prunekit.load(out)
    assert_reproduces(out, DataOptions(str(trained["csv"])), final["metrics"], model)  # one text at a time
    assert model.rnn.hidden_size == 6 and model.rnn.num_layers == 2 and model.classifier.in_features == 12
    result = runner.invoke(app, ["inspect", str(out)], terminal_width=200)
    assert result.exit_code == 0 and "rnn.l1_reverse 6" in result.output and "rnn.weight_hh_l1" in result.output
    # prunekit's own GRU is rebuilt from its config, no code import: it needs no --trust-remote-code
    result = runner.invoke(app, ["evaluate", "-m", str(out), "-d", str(trained["csv"]), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output[result.output.index("{"):]) == pytest.approx(final["metrics"], abs=1e-6)


def test_prune_filters_and_unstructured_on_a_textcnn(trained, tmp_path):
    result = _prune(trained, "textcnn", tmp_path / "cnn", "--filters", "0.5", "--scope", "global")
    assert result.exit_code == 0, result.output
    assert sum(prunekit.load(tmp_path / "cnn").config.num_filters) == 12
    result = _prune(trained, "textcnn", tmp_path / "sparse", "--sparsity", "0.5", "--schedule", "oneshot")
    assert result.exit_code == 0, result.output
    sparsity = json.loads((tmp_path / "sparse" / "report.json").read_text())["layer_sparsity"]
    assert set(sparsity) == {"convs.0.weight", "convs.1.weight", "convs.2.weight"}
    assert all(abs(v - 0.5) < 0.1 for v in sparsity.values())


@pytest.mark.parametrize(("model", "flags", "message"), [
    ("bigru", ["--units", "0.99"], "would remove every hidden unit of rnn.l0"),
    ("bigru", ["--filters", "0.5"], "no filters to remove"),
    ("bigru", ["--heads", "0.5"], "use --units"),
    ("textcnn", ["--units", "0.5", "--ffn", "0.5"], "not both"),
    ("textcnn", ["--method", "sparsegpt", "--schedule", "oneshot"], "transformer blocks"),
])
def test_bad_ratios_are_one_line_errors_and_nothing_is_written(trained, tmp_path, model, flags, message):
    result = _prune(trained, model, tmp_path / "o", *flags)
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o*"))


def test_finetune_needs_a_model_or_an_arch(trained, tmp_path):
    result = runner.invoke(app, ["finetune", "-d", str(trained["csv"]), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--arch" in result.output


# ---------------------------------------------------------------------------------------------------
# a user's own module through the CLI (--module): tests/_textnet_zoo.py's UserGRU
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def custom(trained, tmp_path_factory) -> Path:
    """`prunekit finetune --module _textnet_zoo:UserGRU` on the tiny CSV."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("custom") / "gru"
    result = runner.invoke(app, ["finetune", "--module", "_textnet_zoo:UserGRU", "--module-kwargs", '{"hidden": 10}',
                                 "-d", str(trained["csv"]), "--out", str(out), "--epochs", "10", "--lr", "1e-2",
                                 "--batch-size", "16", "--no-latency"])
    assert result.exit_code == 0, result.output
    yield out
    torch.set_num_threads(n)


def _error_line(result) -> str:
    assert result.exit_code == 2, result.output
    return result.output.strip().splitlines()[-1]


def test_a_users_module_trains_prunes_reloads_and_evaluates_through_the_cli(trained, custom, tmp_path):
    from _textnet_zoo import UserGRU

    saved = json.loads((custom / "prunekit_textnet_shapes.json").read_text())
    assert saved["module"] == "_textnet_zoo:UserGRU" and saved["module_kwargs"]["hidden"] == 10
    assert saved["id2label"] == {"0": "negative", "1": "positive"}
    report = json.loads((custom / "report.json").read_text())
    assert report["stages"][-1]["metrics"]["accuracy"] >= 0.75
    out = tmp_path / "half"
    result = runner.invoke(app, ["prune", "-m", str(custom), "-d", str(trained["csv"]), "--out", str(out),
                                 "--no-latency", "--finetune-epochs", "1", "--units", "0.5", "--embedding", "0.25",
                                 "--importance", "activation", "--trust-remote-code"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["shapes"]["widths"] == {"embedding": 12, "gru.l0": 5, "gru.l0_reverse": 5}
    assert report["reload_check"]["max_abs_logit_diff"] <= 1e-6
    model = prunekit.load(out, trust_remote_code=True)  # rebuilt from the recorded import path and kwargs
    assert isinstance(model, UserGRU) and model.gru.hidden_size == 5 and model.emb.embedding_dim == 12
    assert_reproduces(out, DataOptions(str(trained["csv"])), report["stages"][-1]["metrics"], model)
    plain = load_into(UserGRU(**saved["module_kwargs"]), out)  # the Python API gets the same weights
    b = {"input_ids": torch.tensor([[3, 4, 5, 0], [6, 7, 0, 0]]), "attention_mask": torch.tensor([[1, 1, 1, 0],
                                                                                                   [1, 1, 0, 0]])}
    assert torch.equal(model(**b).logits, plain(b["input_ids"], b["attention_mask"]))
    result = runner.invoke(app, ["evaluate", "-m", str(out), "-d", str(trained["csv"]), "--json"])
    assert "--trust-remote-code" in _error_line(result)  # the folder's own class is imported only on opt-in
    result = runner.invoke(app, ["evaluate", "-m", str(out), "-d", str(trained["csv"]), "--json",
                                 "--trust-remote-code"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output[result.output.index("{"):]) == pytest.approx(report["stages"][-1]["metrics"],
                                                                                 abs=1e-6)


def test_a_folder_whose_module_cannot_be_imported_needs_module(trained, custom, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(custom, moved)
    record = json.loads((moved / "prunekit_textnet_shapes.json").read_text())
    (moved / "prunekit_textnet_shapes.json").write_text(json.dumps({**record, "module": "renamed_away:UserGRU"}))
    flags = ["-d", str(trained["csv"]), "--no-latency", "--finetune-epochs", "0", "--units", "0.5"]
    result = runner.invoke(app, ["prune", "-m", str(moved), "--out", str(tmp_path / "o"), "--trust-remote-code",
                                 *flags])
    assert "cannot import 'renamed_away'" in _error_line(result) and not (tmp_path / "o").exists()
    result = runner.invoke(app, ["prune", "-m", str(moved), "--module", "_textnet_zoo:UserGRU", "--out",
                                 str(tmp_path / "o"), *flags])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "o" / "prunekit_textnet_shapes.json").read_text())["module"] == "_textnet_zoo:UserGRU"


@pytest.mark.parametrize("args", [
    ["finetune", "--module", "_textnet_zoo:UserGRUWithNorm", "--epochs", "1"],
    ["prune", "-m", "{custom}", "--module", "_textnet_zoo:UserGRUWithNorm", "--units", "0.5"],
])
def test_an_untraceable_module_is_refused_naming_the_layer_and_nothing_is_written(trained, custom, tmp_path, args):
    args = [a.replace("{custom}", str(custom)) for a in args]
    result = runner.invoke(app, [*args, "-d", str(trained["csv"]), "--out", str(tmp_path / "o"), "--no-latency"])
    line = _error_line(result)
    assert line.startswith("error: prunekit cannot trace layer 'norm' (LayerNorm)")
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o*"))


@pytest.mark.parametrize(("args", "message"), [
    (["finetune", "--module", "_textnet_zoo:UserGRU", "--module-kwargs", "{hidden: 3}"], "not valid JSON"),
    (["finetune", "--module", "_textnet_zoo:UserGRU", "--module-kwargs", '{"num_labels": 5}'], "has 5 outputs"),
    (["finetune", "--module", "_textnet_zoo:NoSuchNet"], "has no 'NoSuchNet'"),
    (["finetune", "--module", "_textnet_zoo:UserGRU", "--arch", "bilstm"], "exactly one of"),
    (["prune", "-m", "{bigru}", "--module", "_textnet_zoo:UserGRU", "--units", "0.5"], "not one"),
])
def test_bad_module_arguments_are_one_line_errors(trained, tmp_path, args, message):
    args = [a.replace("{bigru}", str(trained["bigru"])) for a in args]
    result = runner.invoke(app, [*args, "-d", str(trained["csv"]), "--out", str(tmp_path / "o"), "--no-latency"])
    assert message in _error_line(result) and not (tmp_path / "o").exists()


def test_same_schedules_as_transformers_iterative_structured_with_distillation_and_gradual_unstructured(
        trained, tmp_path):
    result = _prune(trained, "bigru", tmp_path / "it", "--units", "0.5", "--steps", "2", "--distill",
                    "--importance", "activation")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "it" / "report.json").read_text())
    assert [s["name"] for s in report["stages"]] == ["baseline", "pruned", "step_1", "final"]
    assert [p["keep"]["rnn.l1_reverse"].__len__() for p in report["plans"]] == [9, 6]
    assert report["settings"]["prune"]["distill"] and report["shapes"]["widths"]["rnn.l0"] == 6
    result = _prune(trained, "bigru", tmp_path / "gr", "--sparsity", "0.5", "--steps", "2")  # gradual: the default
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "gr" / "report.json").read_text())
    assert report["settings"]["prune"]["schedule"] == "gradual" and report["stages"][-1]["name"] == "final"
    sparsity = report["layer_sparsity"]
    assert {n for n in sparsity if n.startswith("rnn.weight_ih")} == {"rnn.weight_ih_l0", "rnn.weight_ih_l0_reverse",
                                                                        "rnn.weight_ih_l1", "rnn.weight_ih_l1_reverse"}
    assert all(abs(v - 0.5) < 0.1 for v in sparsity.values())
