"""Classification metrics, computed in one place so every report agrees on their definitions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
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
