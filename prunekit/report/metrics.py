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


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def retrieval_metrics(queries: np.ndarray, passages: np.ndarray, gold: Sequence[int], k: int = 10) -> dict[str, float]:
    """Recall@1 and MRR@k of cosine retrieval: query i's right passage is ``passages[gold[i]]``; ties rank
    the right passage last (a collapsed model scores 0, not chance)."""
    gold = np.asarray(gold, dtype=np.int64)
    if len(queries) == 0 or len(queries) != len(gold) or len(passages) == 0:
        raise PrunekitError(f"cannot score retrieval of {len(queries)} queries over {len(passages)} passages")
    scores = _unit_rows(queries) @ _unit_rows(passages).T
    right = scores[np.arange(len(gold)), gold]
    rank = (scores >= right[:, None]).sum(axis=1)  # 1 = first; every tie counts ahead of the right passage
    return {"recall_at_1": float((rank == 1).mean()),
            f"mrr_at_{k}": float(np.where(rank <= k, 1.0 / rank, 0.0).mean())}


def pair_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``a`` with the same row of ``b``."""
    return (_unit_rows(a) * _unit_rows(b)).sum(axis=-1)


def pair_auc(a: np.ndarray, b: np.ndarray, labels: Sequence[int]) -> float:
    """ROC-AUC of the pairs' cosine as the score of "paraphrase" (label 1): 0.5 when one class is absent."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels, dtype=np.int64)
    return float(roc_auc_score(y, pair_cosines(a, b))) if len(set(y.tolist())) == 2 else 0.5


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
