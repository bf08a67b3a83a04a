"""End to end on a tiny CSV through the CLI: train an LSTM/GRU/TextCNN, prune it structurally or not, reload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_rows
from typer.testing import CliRunner

import prunekit
from prunekit.cli import app

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
    assert report["reload_check"] == {"loader": "prunekit.load", "max_abs_logit_diff": 0.0, "same_predictions": True}
    base, final = report["stages"][0], report["stages"][-1]
    assert final["params_total"] < base["params_total"] / 2 and final["macs_per_token"] < base["macs_per_token"] / 2
    model = prunekit.load(out)
    assert model.rnn.hidden_size == 6 and model.rnn.num_layers == 2 and model.classifier.in_features == 12
    result = runner.invoke(app, ["inspect", str(out)], terminal_width=200)
    assert result.exit_code == 0 and "rnn.l1_reverse 6" in result.output and "rnn.weight_hh_l1" in result.output
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
])
def test_bad_ratios_are_one_line_errors_and_nothing_is_written(trained, tmp_path, model, flags, message):
    result = _prune(trained, model, tmp_path / "o", *flags)
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o*"))


def test_finetune_needs_a_model_or_an_arch(trained, tmp_path):
    result = runner.invoke(app, ["finetune", "-d", str(trained["csv"]), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--arch" in result.output
