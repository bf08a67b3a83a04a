"""Regression data, metrics and the task's own pieces: numeric labels, splits, Pearson/Spearman/MAE, the
distillation loss, the head check and the reload comparison."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import BertForSequenceClassification, BertLMHeadModel

from prunekit.data import load_classification, load_regression
from prunekit.errors import PrunekitError
from prunekit.report.metrics import regression_metrics
from prunekit.tasks import TASKS, get_task
from prunekit.tasks.regression import RegressionTask, distill_loss
from prunekit.train.distill import DistillConfig


def _scores(n: int = 100) -> pd.DataFrame:
    return pd.DataFrame({"text": [f"text number {i}" for i in range(n)], "score": [i / 10 - 4 for i in range(n)]})


def test_numeric_labels_split_80_10_10_unstratified_and_fixed(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    _scores().to_csv(path, index=False)
    a = load_regression(str(path))
    assert (len(a.train), len(a.validation), len(a.test)) == (80, 10, 10)
    assert a.label_column == "score" and a.label_names == ["score"] and a.num_labels == 1
    assert all(isinstance(y, float) for y in a.train.labels)
    rows = dict(zip(_scores()["text"], _scores()["score"], strict=True))
    assert all(rows[t] == y for (t,), y in zip(a.test.texts, a.test.labels, strict=True))
    b = load_regression(str(path))
    assert a.test.texts == b.test.texts
    assert load_regression(str(path), split_seed=1).test.texts != a.test.texts


def test_numeric_labels_from_strings_and_given_column(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    rows = [{"sentence": f"t{i}", "y": str(i * 0.5), "label": "x"} for i in range(30)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = load_regression(str(path), text_columns=["sentence"], label_column="y")
    assert sorted(y for s in data.splits.values() for y in s.labels) == [i * 0.5 for i in range(30)]


@pytest.mark.parametrize(("value", "shown"), [("great", "'great'"), ("inf", "inf"), ("nan", "'nan'"),
                                               ("-Infinity", "-inf")])
def test_a_label_that_is_not_a_finite_number_is_refused_with_its_row(tmp_path: Path, value: str, shown: str) -> None:
    df = _scores(20).astype({"score": object})
    df.loc[7, "score"] = value
    path = tmp_path / "s.csv"
    df.to_csv(path, index=False)
    with pytest.raises(PrunekitError, match=r"label column 'score' in .* must hold numbers for regression: row 8 "
                                            rf"holds {shown} \(not (a number|finite)\)") as err:
        load_regression(str(path))
    assert "\n" not in str(err.value)


def test_a_json_true_is_not_a_score(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps({"text": f"t{i}", "label": i == 3 or i}) + "\n" for i in range(10)))
    with pytest.raises(PrunekitError, match=r"row 4 holds True \(not a number\)"):
        load_regression(str(path))


def test_builtin_names_are_kind_checked() -> None:
    with pytest.raises(PrunekitError, match="'movie-reviews' is a built-in classification asset, not a regression"):
        load_regression("movie-reviews")
    with pytest.raises(PrunekitError, match="'movie-review-scores' is a built-in regression asset, not a classi"):
        load_classification("movie-review-scores")


def test_movie_review_scores_real_asset_reads_scores_with_neutral_rows() -> None:
    """The real snippets (built from the vaderSentiment sdist, cached): all 10,605 rows, scores in [-4, 4],
    the neutral 0 scores kept (movie-reviews drops them), text not in the repo."""
    data = load_regression("movie-review-scores")
    labels = [y for s in data.splits.values() for y in s.labels]
    assert len(labels) == 10_605 and (len(data.validation), len(data.test)) == (1060, 1060)
    assert min(labels) >= -4 and max(labels) <= 4 and 0.0 in labels
    assert data.text_columns == ("text",) and all(t[0].strip() for t in data.test.texts[:20])


def test_regression_metrics() -> None:
    m = regression_metrics([1.0, 2.0, 3.0, 4.0], [1.5, 2.0, 2.5, 5.0], loss=0.375)
    assert m["pearson"] == pytest.approx(np.corrcoef([1, 2, 3, 4], [1.5, 2, 2.5, 5])[0, 1])
    assert m["spearman"] == pytest.approx(1.0)
    assert m["mae"] == pytest.approx(0.5) and m["mse"] == pytest.approx(0.375) and m["loss"] == 0.375
    flat = regression_metrics([1.0, 2.0, 3.0], [0.7, 0.7, 0.7], loss=1.0)
    assert flat["pearson"] == 0.0 and flat["spearman"] == 0.0 and not math.isnan(flat["mae"])
    with pytest.raises(PrunekitError, match="cannot score 2 predictions against 3 labels"):
        regression_metrics([1.0, 2.0, 3.0], [1.0, 2.0], loss=0.0)


def test_distill_loss_mixes_label_and_teacher_mse_without_temperature() -> None:
    student = torch.tensor([[1.0], [2.0]])
    teacher, labels = torch.tensor([[0.0], [2.0]]), torch.tensor([3.0, 2.0])
    cfg = DistillConfig(alpha=0.25, temperature=7.0)
    want = 0.25 * ((1 - 3) ** 2 + 0) / 2 + 0.75 * ((1 - 0) ** 2 + 0) / 2
    assert float(distill_loss(student, teacher, labels, cfg)) == pytest.approx(want)
    assert float(distill_loss(student, teacher, labels, DistillConfig(alpha=0.25, temperature=1.0))) == \
        pytest.approx(want)


def test_registry_and_reload_comparison() -> None:
    task = get_task("regression")
    assert TASKS["regression"] is task and isinstance(task, RegressionTask) and task.metric == "pearson"
    a = np.array([[0.5], [1.25]], dtype=np.float32)
    assert task.same_predictions(a, a + 5e-5) and not task.same_predictions(a, a + np.array([[0.0], [0.01]]))


def test_a_classifier_or_a_decoder_is_refused_before_its_weights_load(tiny_bert_with_head, tmp_path: Path) -> None:
    task, data = get_task("regression"), None
    three = tiny_bert_with_head(BertForSequenceClassification, num_labels=3)
    with pytest.raises(PrunekitError, match=r"is a classifier with 3 labels .*; --task regression needs a regression "
                                            "head"):
        task.load_model(str(three), data)
    lm = tiny_bert_with_head(BertLMHeadModel, is_decoder=True)
    with pytest.raises(PrunekitError, match=r"is a BertLMHeadModel \(causal LM\); --task regression needs an encoder"):
        task.load_model(str(lm), data)


def test_a_bare_encoder_gets_a_one_output_regression_head(tiny_encoder: Path, tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    _scores(20).to_csv(path, index=False)
    data = load_regression(str(path))
    model, _, new = get_task("regression").load_model(str(tiny_encoder), data)
    assert new and model.config.num_labels == 1 and model.config.problem_type == "regression"
    assert model.config.id2label == {0: "score"}
