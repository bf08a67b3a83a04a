"""How sparsity moves over steps: one-shot, iterative, and the gradual cubic schedule."""

from __future__ import annotations

from prunekit.errors import PrunekitError

SCHEDULES = ("oneshot", "iterative", "gradual")


def cubic_sparsity(
    step: int, total: int, final: float, initial: float = 0.0, start: float = 0.0, end: float = 0.75
) -> float:
    """Zhu & Gupta (2017): s_t = s_f + (s_i − s_f)(1 − (t − t0)/(n·Δt))³.

    Prunes fast early, while redundant weights are plentiful, and slowly as the target nears;
    ``start``/``end`` are fractions of training between which sparsity ramps, the rest recovers.
    """
    if total <= 0:
        return final
    t0, t1 = start * total, end * total
    if step <= t0:
        return initial
    if step >= t1 or t1 <= t0:
        return final
    frac = (step - t0) / (t1 - t0)
    return final + (initial - final) * (1.0 - frac) ** 3


def iterative_targets(final: float, steps: int) -> list[float]:
    """Evenly spaced targets reaching ``final`` at the last of ``steps`` prune → recover rounds."""
    if steps < 1:
        raise PrunekitError(f"--steps must be at least 1, got {steps}")
    return [final * (k + 1) / steps for k in range(steps)]


def check_schedule(schedule: str, needs_training: bool, method: str, solves: bool = False) -> None:
    """Refuse method/schedule pairs that cannot work. ``solves``: the method rewrites the kept weights in
    a calibrated pass over every block (SparseGPT); gradual pruning would run one every few optimizer
    steps and change the weights under the optimizer's feet."""
    if schedule not in SCHEDULES:
        raise PrunekitError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if solves and schedule == "gradual":
        raise PrunekitError(f"{method} prunes in calibrated passes that also update the kept weights, not during "
                            "fine-tuning: use --schedule oneshot or iterative")
    if needs_training and schedule != "gradual":
        raise PrunekitError(
            f"{method} pruning learns its scores during fine-tuning: use --schedule gradual"
        )
