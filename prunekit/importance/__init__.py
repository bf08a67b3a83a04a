"""Criteria that rank weights: one small class per criterion, looked up by name in one registry."""

from __future__ import annotations

from prunekit.importance import registry
from prunekit.importance.base import AccumulatingImportance, Importance
from prunekit.importance.groups import Activation, BlockInfluence, FromGroups, Greedy, Loss, Skip
from prunekit.importance.magnitude import L1, L2, Magnitude
from prunekit.importance.movement import Movement
from prunekit.importance.random_scores import RandomImportance
from prunekit.importance.registry import WEIGHTS, Names, describe, register, unregister
from prunekit.importance.taylor import Taylor
from prunekit.importance.wanda import Wanda

# the built-in criteria, in the order the CLI lists them
for _cls in (Magnitude, L1, L2, RandomImportance, Taylor, Activation, Movement, Wanda,
             Greedy, Loss, Skip, BlockInfluence, FromGroups):
    register(_cls)

#: the criteria of unstructured pruning (``prunekit prune --method``), read from the registry
METHODS = Names(lambda: registry.names(WEIGHTS))


def make_importance(method: str, seed: int = 0) -> Importance:
    """Build a criterion from its CLI name."""
    return registry.create(method, WEIGHTS, seed)


__all__ = [
    "L1",
    "L2",
    "METHODS",
    "AccumulatingImportance",
    "Activation",
    "Importance",
    "Magnitude",
    "Movement",
    "RandomImportance",
    "Taylor",
    "Wanda",
    "describe",
    "make_importance",
    "register",
    "registry",
    "unregister",
]
