"""Fixed, seeded train/validation/test splits of labelled rows: pure functions on label lists.

Below both :mod:`prunekit.assets` (which writes the built-in datasets' fixed splits when it builds them)
and :mod:`prunekit.data` (which carves splits out of a user's single file): one split rule for both,
and neither has to import the other for it.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from sklearn.model_selection import train_test_split

from prunekit.errors import PrunekitError

HELD_OUT_FRACTION = 0.1  # validation and test each take 10 % when they have to be carved out of train


def take(idx: list[int], labels: Sequence[Hashable] | None, n: int, seed: int) -> tuple[list[int], list[int]]:
    """Split ``idx`` into (rest, ``n`` taken), stratified unless some class is too small for that (or
    ``labels`` is None: numeric targets have no classes to balance)."""
    if labels is None:
        rest, taken = train_test_split(idx, test_size=n, random_state=seed)
        return list(rest), list(taken)
    strata = [labels[i] for i in idx]
    try:
        rest, taken = train_test_split(idx, test_size=n, random_state=seed, stratify=strata)
    except ValueError:  # a class with one member, or fewer rows to take than classes
        rest, taken = train_test_split(idx, test_size=n, random_state=seed)
    return list(rest), list(taken)


def held_out_size(n: int) -> int:
    """Rows each of validation and test take out of ``n``."""
    return max(1, round(n * HELD_OUT_FRACTION))


def stratified_split(labels: Sequence[Hashable], seed: int = 0) -> dict[str, list[int]]:
    """Row indices of a fixed 80/10/10 train/validation/test split, stratified by label."""
    return held_out_split(len(labels), seed, labels)


def held_out_split(n: int, seed: int = 0, strata: Sequence[Hashable] | None = None) -> dict[str, list[int]]:
    """Row indices of a fixed 80/10/10 train/validation/test split of ``n`` rows, stratified by ``strata``
    when given (class labels), else plain seeded (numeric targets)."""
    if n < 3:
        raise PrunekitError(f"only {n} labelled rows: need at least 3 to make train/validation/test splits")
    n_val = n_test = held_out_size(n)
    train, held = take(list(range(n)), strata, n_val + n_test, seed)
    test, val = take(held, strata, n_val, seed)
    return {"train": train, "validation": val, "test": test}
