import pytest
import torch

from prunekit.errors import PrunekitError
from prunekit.report.metrics import classification_metrics


def test_known_values():
    # class 0: tp=2 fp=1 fn=0; class 1: tp=1 fp=1 fn=1; class 2: never predicted
    labels = [0, 0, 1, 1, 2]
    preds = [0, 0, 1, 0, 1]
    m = classification_metrics(labels, preds, 0.5)
    assert list(m) == ["accuracy", "f1_macro", "precision", "recall", "loss"]
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    assert m["recall"] == pytest.approx((1 + 1 / 2 + 0) / 3)
    assert m["f1_macro"] == pytest.approx((0.8 + 0.5 + 0) / 3)
    assert m["loss"] == 0.5
    assert all(type(v) is float for v in m.values())


def test_accepts_tensors_and_perfect_scores():
    y = torch.tensor([1, 0, 1])
    m = classification_metrics(y, y.clone(), torch.tensor(0.25).item())
    assert m["accuracy"] == m["f1_macro"] == m["precision"] == m["recall"] == 1.0


def test_mismatched_lengths_fail():
    with pytest.raises(PrunekitError):
        classification_metrics([0, 1], [0], 0.0)
    with pytest.raises(PrunekitError):
        classification_metrics([], [], 0.0)
