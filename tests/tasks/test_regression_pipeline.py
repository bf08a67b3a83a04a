"""Text regression end to end on a tiny BERT and a synthetic numeric CSV: finetune, evaluate, unstructured
(gradual, oneshot) and structured pruning, distillation and a recipe, through the Python API and the CLI;
report.json has the classification report's top-level keys; bad input is one line."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import FILL, NEG, POS, _config, _tokenizer
from transformers import AutoModelForSequenceClassification, BertModel
from typer.testing import CliRunner

from prunekit.cli import app
from prunekit.config import DataOptions, PruneSettings, TrainOptions
from prunekit.errors import PrunekitError
from prunekit.pipeline import evaluate, finetune, prune
from prunekit.recipe import parse_recipe, run_recipe

runner = CliRunner()


def score_rows(n: int = 240, seed: int = 0) -> pd.DataFrame:
    """Texts whose score is (positive words − negative words) / 2 plus a little noise: learnable by a tiny model."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        k = rng.randint(0, 3)
        words = rng.sample(FILL, 3) + rng.sample(POS, k) + rng.sample(NEG, 3 - k)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "score": k - 1.5 + rng.uniform(-0.2, 0.2)})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def regressor(tmp_path_factory) -> tuple[Path, Path, Path, dict]:
    """(fine-tuned regressor folder, csv, bare encoder folder, finetune report), fine-tuned once."""
    root = tmp_path_factory.mktemp("regression")
    csv = root / "scores.csv"
    score_rows().to_csv(csv, index=False)
    enc = root / "enc"
    enc.mkdir()
    tok = _tokenizer(enc)
    torch.manual_seed(0)
    BertModel(_config(tok.vocab_size)).save_pretrained(enc)
    tok.save_pretrained(enc)
    out = root / "reg"
    report = finetune(str(enc), _data(csv), out, TrainOptions(epochs=4, lr=1e-3, batch_size=16), latency=False,
                      task="regression")
    return out, csv, enc, report


def _data(csv: Path) -> DataOptions:
    return DataOptions(str(csv), max_length=16)


def test_finetune_learns_scores_and_saves_a_one_output_regressor(regressor) -> None:
    out, csv, _, report = regressor
    final = report["stages"][-1]
    assert set(final["metrics"]) == {"pearson", "spearman", "mae", "mse", "loss"}
    assert final["metrics"]["pearson"] > 0.8 and final["metrics"]["loss"] == pytest.approx(final["metrics"]["mse"])
    assert report["task"] == "regression" and report["model"]["labels"] == ["score"]
    assert report["data"]["label_column"] == "score"
    assert report["reload_check"]["same_predictions"] and report["reload_check"]["max_abs_logit_diff"] <= 1e-4
    saved = json.loads((out / "report.json").read_text())
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_labels == 1 and model.config.problem_type == "regression"
    assert "Pearson" in (out / "report.md").read_text()
    assert saved["stages"][-1]["metrics"]["pearson"] == pytest.approx(final["metrics"]["pearson"])
    # evaluate reads the same model and data back: the same numbers
    again = evaluate(str(out), _data(csv), task="regression")
    assert again["pearson"] == pytest.approx(final["metrics"]["pearson"], abs=1e-6)


def test_report_has_the_classification_reports_top_level_keys(regressor, trained_tiny, tmp_path: Path) -> None:
    out, *_ = regressor
    clf, csv = trained_tiny
    classification = prune(str(clf), DataOptions(str(csv)), tmp_path / "c",
                           PruneSettings(sparsity=0.3, schedule="oneshot", finetune_epochs=0, latency=False))
    regression = json.loads((out / "report.json").read_text())
    assert set(regression) - {"training"} <= set(classification) | {"training"}
    assert {"command", "task", "model", "data", "settings", "stages", "speedup", "reload_check"} <= set(regression)


@pytest.mark.parametrize("schedule", ["gradual", "oneshot"])
def test_unstructured_prune_recovers_a_regressor(regressor, tmp_path: Path, schedule: str) -> None:
    out, csv, _, _ = regressor
    s = PruneSettings(sparsity=0.5, schedule=schedule, finetune_epochs=1, lr=5e-4, latency=False, max_drop=50.0)
    report = prune(str(out), _data(csv), tmp_path / "p", s, task="regression")
    final = report["stages"][-1]
    assert final["name"] == "final" and final["sparsity"] > 0.2 and "pearson" in final["metrics"]
    assert final["metrics"]["pearson"] > 0.5 and report["stopped"] is None


def test_structured_prune_with_distillation_uses_the_regression_loss(regressor, tmp_path: Path, monkeypatch) -> None:
    """Distillation goes through the task's loss (MSE to the teacher), not the classifier's KL."""
    import prunekit.tasks.regression as regression

    out, csv, _, _ = regressor
    calls = []
    real = regression.distill_loss
    monkeypatch.setattr(regression, "distill_loss", lambda *a: calls.append(a[0].shape) or real(*a))
    s = PruneSettings(heads=0.5, ffn=0.5, distill=True, finetune_epochs=1, lr=5e-4, latency=False)
    report = prune(str(out), _data(csv), tmp_path / "s", s, task="regression")
    shapes = report["shapes"]["layers"]
    assert [layer["q_heads"] for layer in shapes] == [1, 1] and all(layer["ffn"] == 32 for layer in shapes)
    assert calls and all(shape[-1] == 1 for shape in calls)
    assert report["stages"][-1]["metrics"]["pearson"] > 0.5
    assert report["reload_check"]["same_predictions"]


def test_bare_encoder_gets_a_head_trained_before_pruning(regressor, tmp_path: Path) -> None:
    _, csv, enc, _ = regressor
    s = PruneSettings(sparsity=0.3, schedule="oneshot", finetune_epochs=0, baseline_epochs=1, lr=1e-3, latency=False)
    report = prune(str(enc), _data(csv), tmp_path / "b", s, task="regression")
    assert any("regression head" in note for note in report["notes"])


def test_recipe_with_task_regression(regressor, tmp_path: Path) -> None:
    out, csv, _, _ = regressor
    recipe = {"model": str(out), "task": "regression", "data": {"data": str(csv), "max_length": 16},
              "latency": {"rounds": 0},
              "stages": [{"prune": {"heads": 0.5}}, {"distill": {"epochs": 1, "lr": 5e-4}},
                         {"prune": {"sparsity": 0.3}}]}
    assert parse_recipe(recipe).to_dict()["task"] == "regression"
    report = run_recipe(recipe, tmp_path / "r")
    assert report["task"] == "regression" and [s["name"] for s in report["stages"]][0] == "baseline"
    assert all("pearson" in s["metrics"] for s in report["stages"])
    assert report["stages"][-1]["metrics"]["pearson"] > 0.5
    with pytest.raises(PrunekitError, match="unknown task 'regresion'"):
        parse_recipe({**recipe, "task": "regresion"})


def test_cli_finetune_evaluate_prune(regressor, tmp_path: Path) -> None:
    out, csv, enc, _ = regressor
    common = ["-d", str(csv), "--max-length", "16", "--task", "regression"]
    result = runner.invoke(app, ["finetune", "-m", str(enc), *common, "--out", str(tmp_path / "f"), "--epochs", "1",
                                 "--lr", "1e-3", "--no-latency"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "f" / "report.json").read_text())["task"] == "regression"
    result = runner.invoke(app, ["evaluate", "-m", str(out), *common, "--json"])
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.output[result.output.index("{"):])) == {"pearson", "spearman", "mae", "mse", "loss"}
    result = runner.invoke(app, ["evaluate", "-m", str(out), *common])
    assert re.search(r"pearson  -?\d\.\d{4}\n", result.output), result.output  # a correlation, not a percentage
    result = runner.invoke(app, ["prune", "-m", str(out), *common, "--heads", "0.5", "--ffn", "0.5",
                                 "--finetune-epochs", "0.5", "--distill", "--no-latency", "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "p" / "report.json").read_text())["stages"][-1]["metrics"]["pearson"] > 0.3


def _one_line_error(args: list[str]) -> str:
    result = runner.invoke(app, args)
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_cli_bad_input_is_one_line(regressor, trained_tiny, tmp_path: Path) -> None:
    out, csv, _, _ = regressor
    clf, classes = trained_tiny
    o = str(tmp_path / "o")
    line = _one_line_error(["prune", "-m", str(clf), "-d", str(csv), "--task", "regression", "--out", o])
    assert "is a classifier with 2 labels" in line and "--task regression needs a regression head" in line
    line = _one_line_error(["finetune", "-m", str(out), "-d", str(classes), "--task", "regression", "--out", o])
    assert "must hold numbers for regression: row 1 holds 'negative' (not a number)" in line
    line = _one_line_error(["evaluate", "-m", str(out), "-d", str(csv), "--task", "regresion"])
    assert "--task must be classification, regression" in line and "got 'regresion'" in line  # + new tasks
    assert not (tmp_path / "o").exists()


def test_cli_regression_on_a_causal_lm_is_refused(tmp_path: Path, tiny_bert_with_head, regressor) -> None:
    from transformers import BertLMHeadModel

    _, csv, _, _ = regressor
    lm = tiny_bert_with_head(BertLMHeadModel, is_decoder=True)
    line = _one_line_error(["prune", "-m", str(lm), "-d", str(csv), "--task", "regression", "--out",
                            str(tmp_path / "o")])
    assert "is a BertLMHeadModel (causal LM); --task regression needs an encoder" in line
