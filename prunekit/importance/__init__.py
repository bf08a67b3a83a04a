"""Criteria that rank weights: one small class per criterion, looked up by name."""

from __future__ import annotations

from prunekit.errors import PrunekitError
from prunekit.importance.base import AccumulatingImportance, Importance
from prunekit.importance.magnitude import Magnitude
from prunekit.importance.movement import Movement
from prunekit.importance.random_scores import RandomImportance
from prunekit.importance.taylor import Taylor
from prunekit.importance.wanda import Wanda

METHODS = ("magnitude", "random", "taylor", "movement", "wanda")


def make_importance(method: str, seed: int = 0) -> Importance:
    """Build a criterion from its CLI name."""
    if method == "magnitude":
        return Magnitude()
    if method == "random":
        return RandomImportance(seed)
    if method == "taylor":
        return Taylor()
    if method == "movement":
        return Movement()
    if method == "wanda":
        return Wanda()
    raise PrunekitError(f"unknown pruning method {method!r}; choose one of {', '.join(METHODS)}")


__all__ = [
    "METHODS",
    "AccumulatingImportance",
    "Importance",
    "Magnitude",
    "Movement",
    "RandomImportance",
    "Taylor",
    "Wanda",
    "make_importance",
]
