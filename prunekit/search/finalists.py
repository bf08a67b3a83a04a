"""Choosing among the search's finalists without chasing evaluation noise.

The annealing's best few plans (and the uniform plan) are measured for real. Ranking them by
validation *accuracy* on ~1,000 examples has a winner's curse: one example is 0.1 point, the binomial
standard error about 1 point, so the top of eight near-equal plans is mostly the luckiest. Two things
make the choice steadier:

- **A continuous, per-example loss**: the KL divergence from the unpruned model's predictions
  (:func:`kl_per_example`) on a held-out set (validation plus a seeded slice of training data kept out
  of the finalists' short recovery). Every example contributes a real number, not a 0/1.
- **A paired test against the reference (uniform)**: all finalists are scored on the same examples, so
  the per-example *difference* to uniform cancels what is common to both (hard examples are hard for
  every plan). :func:`paired_choice` takes the finalist with the lowest mean loss, and keeps the
  reference unless that finalist's mean gain exceeds ``margin`` standard errors of the paired
  difference. The search can then only return a plan that beat uniform by more than noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from prunekit.errors import PrunekitError

#: finalist rankings ``prunekit search`` knows: KL to the unpruned model (paired vs uniform), or accuracy
FINALIST_METRICS = ("kl", "accuracy")


def kl_per_example(student_logits: np.ndarray, teacher_logits: np.ndarray) -> np.ndarray:
    """KL(teacher ‖ student) of each example's class distribution, in nats (≥ 0; 0 = same predictions)."""
    s = np.asarray(student_logits, dtype=np.float64)
    t = np.asarray(teacher_logits, dtype=np.float64)
    if s.shape != t.shape or s.ndim != 2:
        raise PrunekitError(f"student and teacher logits must be (examples, classes) of one shape, "
                            f"got {s.shape} and {t.shape}")
    log_s = s - np.logaddexp.reduce(s, axis=1, keepdims=True)
    log_t = t - np.logaddexp.reduce(t, axis=1, keepdims=True)
    return np.maximum((np.exp(log_t) * (log_t - log_s)).sum(axis=1), 0.0)


@dataclass
class Choice:
    """Which finalist :func:`paired_choice` kept, and the numbers it decided on."""

    index: int  # the chosen finalist
    best: int  # the finalist with the lowest mean loss (the chosen one unless its gain was within noise)
    means: list[float]  # each finalist's mean loss
    gains: list[float]  # reference mean − finalist mean (positive: better than the reference)
    ses: list[float]  # standard error of each paired difference (0 for the reference itself)
    margin: float
    note: str = ""
    z: list[float] = field(default_factory=list)  # gain / se (inf when se = 0 and gain > 0)


def paired_choice(losses: Sequence[np.ndarray], reference: int = 0, margin: float = 2.0) -> Choice:
    """The finalist with the lowest mean per-example loss, if its gain over ``losses[reference]`` is more
    than ``margin`` paired standard errors; else the reference. Every array scores the same examples."""
    if not losses:
        raise PrunekitError("paired_choice needs at least one finalist")
    if not 0 <= reference < len(losses):
        raise PrunekitError(f"reference {reference} is not one of the {len(losses)} finalists")
    if margin < 0:
        raise PrunekitError(f"the noise margin must be ≥ 0 standard errors, got {margin}")
    arrays = [np.asarray(x, dtype=np.float64).ravel() for x in losses]
    n = arrays[reference].size
    if n < 2 or any(a.size != n for a in arrays):
        raise PrunekitError(f"every finalist must be scored on the same ≥ 2 examples, got sizes "
                            f"{[a.size for a in arrays]}")
    ref = arrays[reference]
    means, gains, ses, zs = [], [], [], []
    for a in arrays:
        d = ref - a  # per-example gain over the reference
        se = float(d.std(ddof=1) / math.sqrt(n))
        gain = float(d.mean())
        means.append(float(a.mean()))
        gains.append(gain)
        ses.append(se)
        zs.append(gain / se if se > 0 else (math.inf if gain > 0 else 0.0))
    best = min(range(len(arrays)), key=lambda i: (means[i], i != reference))  # ties: the reference
    index, note = best, ""
    if best != reference and not zs[best] > margin:
        index = reference
        note = (f"finalist {best} had the lowest loss ({means[best]:.4g} vs {means[reference]:.4g}) but its gain "
                f"{gains[best]:.3g} is within {margin:g} paired standard errors ({ses[best]:.3g}): kept the reference")
    return Choice(index, best, means, gains, ses, margin, note, zs)


def heldout_indices(n: int, size: int, seed: int) -> np.ndarray:
    """``size`` of ``n`` training indices (sorted), drawn by ``seed``: kept out of the finalists' recovery
    and scored with validation."""
    if size < 0:
        raise PrunekitError(f"the held-out slice must have ≥ 0 examples, got {size}")
    if size >= n:
        raise PrunekitError(f"cannot hold out {size} of {n} training examples (the recovery needs some)")
    rng = np.random.default_rng(seed + 104729)
    return np.sort(rng.choice(n, size=size, replace=False))


__all__ = ["FINALIST_METRICS", "Choice", "heldout_indices", "kl_per_example", "paired_choice"]
