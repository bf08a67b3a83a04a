"""Classification, regression and SQuAD metrics, computed in one place so every report agrees on their definitions;
and the scale the ratio search maximises (which its plots and tables turn back into the metric)."""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch
from scipy import stats
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from prunekit.errors import PrunekitError

ArrayLike = Sequence[int] | np.ndarray | torch.Tensor


def _as_numpy(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def classification_metrics(labels: ArrayLike, preds: ArrayLike, loss: float) -> dict[str, float]:
    """Accuracy and macro precision/recall/F1 (classes without predictions count as 0), plus mean loss."""
    y_true, y_pred = _as_numpy(labels).ravel(), _as_numpy(preds).ravel()
    if y_true.size == 0 or y_true.shape != y_pred.shape:
        raise PrunekitError(f"cannot score {y_pred.size} predictions against {y_true.size} labels")
    precision, recall, f1, _ = precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1_macro": float(f1),
        "precision": float(precision),
        "recall": float(recall),
        "loss": float(loss),
    }


def regression_metrics(labels: ArrayLike, preds: ArrayLike, loss: float) -> dict[str, float]:
    """Pearson and Spearman correlation, mean absolute and mean squared error, plus mean loss.

    A constant prediction (or constant labels) has no correlation to measure: both correlations are
    then 0.0 rather than NaN, so reports stay valid JSON and a collapsed model reads as what it is."""
    y_true = _as_numpy(labels).astype(np.float64).ravel()
    y_pred = _as_numpy(preds).astype(np.float64).ravel()
    if y_true.size == 0 or y_true.shape != y_pred.shape:
        raise PrunekitError(f"cannot score {y_pred.size} predictions against {y_true.size} labels")
    varied = y_true.size > 1 and np.ptp(y_true) > 0 and np.ptp(y_pred) > 0
    err = y_pred - y_true
    return {
        "pearson": float(stats.pearsonr(y_true, y_pred)[0]) if varied else 0.0,
        "spearman": float(stats.spearmanr(y_true, y_pred)[0]) if varied else 0.0,
        "mae": float(np.abs(err).mean()),
        "mse": float((err**2).mean()),
        "loss": float(loss),
    }


def score_of(metric: str, value: float) -> float:
    """The number the search maximises, in the metric's own units: accuracy points, or −ln(perplexity)
    (nats per token; a perplexity ratio is additive there)."""
    return -math.log(value) if metric == "perplexity" else value


def metric_of(metric: str, score: float) -> float:
    """The metric a search score stands for (the inverse of :func:`score_of`)."""
    return math.exp(-score) if metric == "perplexity" else score


def token_metrics(true_tags: list[list[str]], pred_tags: list[list[str]], loss: float) -> dict[str, float]:
    """Entity-level precision/recall/F1 (seqeval, strict IOB2: an entity counts only when its B- start, type and
    end all match, as the CoNLL-2003 script scores), token accuracy over words, and the mean loss."""
    from seqeval.metrics import f1_score, precision_score, recall_score  # only the NER task needs seqeval
    from seqeval.scheme import IOB2

    if not true_tags or [len(t) for t in true_tags] != [len(p) for p in pred_tags]:
        raise PrunekitError(f"cannot score {len(pred_tags)} tagged sentences against {len(true_tags)}")
    kw = {"mode": "strict", "scheme": IOB2, "zero_division": 0}
    words = sum(len(t) for t in true_tags)
    right = sum(a == b for t, p in zip(true_tags, pred_tags, strict=True) for a, b in zip(t, p, strict=True))
    return {
        "f1": float(f1_score(true_tags, pred_tags, **kw)),
        "precision": float(precision_score(true_tags, pred_tags, **kw)),
        "recall": float(recall_score(true_tags, pred_tags, **kw)),
        "token_accuracy": right / words if words else 0.0,
        "loss": float(loss),
    }


def normalize_answer(text: str) -> str:
    """SQuAD's official normalisation: lower case, no punctuation, no articles (a/an/the), single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def squad_f1(prediction: str, gold: str) -> float:
    """Token-overlap F1 between two answers after :func:`normalize_answer` (the official script's)."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(predictions: list[str], golds: list[list[str]]) -> dict[str, float]:
    """Exact match and F1 in [0, 1], each the max over an example's gold answers, averaged over examples."""
    em = [max((float(normalize_answer(p) == normalize_answer(g)) for g in gs), default=0.0)
          for p, gs in zip(predictions, golds, strict=True)]
    f1 = [max((squad_f1(p, g) for g in gs), default=0.0) for p, gs in zip(predictions, golds, strict=True)]
    n = max(1, len(em))
    return {"exact_match": sum(em) / n, "f1": sum(f1) / n}
