"""The one registry of criteria: a criterion is one class, registered once, usable wherever it applies.

Each class says where it applies (:data:`PLACES`) and what it needs (weights only, gradients,
activations); ``make_importance``, group scoring, layer ranking and the one-shot engine all look names
up here, and the constants the CLI reads (``METHODS``, ``CRITERIA``, ``LAYER_SCORES``, ...) are live
views of it, so a new criterion needs no edit anywhere else (``docs/guides/adding-a-criterion.md``).
:class:`Registry` is shared with the solvers (:mod:`prunekit.prune.solvers`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar, Generic, Protocol, TypeVar, overload

from prunekit.errors import PrunekitError

#: single weights of a classifier (``prunekit prune --method``, every schedule and scope)
WEIGHTS = "weights"
#: whole groups — heads, kv groups, FFN neurons, hidden dims, RNN units, conv filters, embedding dims
#: (``--importance``: structured pruning, sensitivity and search)
GROUPS = "groups"
#: per-Linear scores of the one-shot LM engine (``prunekit prune --task lm --method``)
ONESHOT = "oneshot"
#: whole layers ranked for removal (``--layer-importance``)
LAYERS = "layers"
#: where a criterion may apply, and the noun its refusals use
PLACES = {WEIGHTS: "pruning method", GROUPS: "group criterion", ONESHOT: "one-shot method",
          LAYERS: "layer score"}


class Named(Protocol):
    name: str
    help: str

    @classmethod
    def describe(cls) -> str: ...


T = TypeVar("T", bound=Named)


class Criterion(Named, Protocol):
    """What the registry needs of a criterion class (:class:`~prunekit.importance.base.Importance` is one):
    the shape, not the base class, so the registry sits below the criteria that register in it."""

    applies: ClassVar[frozenset[str]]

    @classmethod
    def build(cls, seed: int = 0) -> Any: ...


class Registry(Generic[T]):
    """Classes by their ``name``, in registration order; each needs a one-line ``help``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.items: dict[str, type[T]] = {}

    def register(self, cls: type[T]) -> type[T]:
        if not getattr(cls, "name", None) or cls.name == "base":
            raise PrunekitError(f"{self.kind} class {cls.__name__} needs a name")
        if not getattr(cls, "help", None):
            raise PrunekitError(f"{self.kind} {cls.name} needs a one-line help")
        if self.items.get(cls.name, cls) is not cls:
            raise PrunekitError(f"a {self.kind} named {cls.name!r} is already registered "
                                f"({self.items[cls.name].__name__})")
        self.items[cls.name] = cls
        return cls

    def unregister(self, name: str) -> None:
        self.items.pop(name, None)

    def names(self, keep: Callable[[type[T]], bool] | None = None) -> tuple[str, ...]:
        return tuple(n for n, cls in self.items.items() if keep is None or keep(cls))

    def get(self, name: str, noun: str, keep: Callable[[type[T]], bool] | None = None,
            elsewhere: Callable[[type[T]], str] | None = None) -> type[T]:
        """The class ``name``, refused in one line when unknown or when ``keep`` rejects it
        (``elsewhere`` then says what it is instead)."""
        cls = self.items.get(name)
        if cls is None or (keep is not None and not keep(cls)):
            what = f" (it is a {elsewhere(cls)})" if cls is not None and elsewhere is not None else ""
            raise PrunekitError(f"unknown {noun} {name!r}{what}; choose one of {', '.join(self.names(keep))}")
        return cls

    def describe(self, keep: Callable[[type[T]], bool] | None = None) -> dict[str, str]:
        return {n: self.items[n].describe() for n in self.names(keep)}


_CRITERIA: Registry[Criterion] = Registry("criterion")
#: every registered criterion by name, in registration order
CRITERIA = _CRITERIA.items


def _at(where: str | None) -> Callable[[type[Criterion]], bool] | None:
    return None if where is None else (lambda cls: where in cls.applies)


def _places(cls: type[Criterion]) -> str:
    return " or ".join(noun for p, noun in PLACES.items() if p in cls.applies)


def register(cls: type[Criterion]) -> type[Criterion]:
    """Make ``cls`` selectable by its ``name`` wherever its ``applies`` says (usable as a class decorator)."""
    unknown = set(cls.applies) - set(PLACES)
    if not cls.applies or unknown:
        raise PrunekitError(f"criterion {cls.name} applies to {sorted(unknown) or 'nothing'}; "
                            f"choose among {', '.join(PLACES)}")
    return _CRITERIA.register(cls)


def unregister(name: str) -> None:
    """Forget a criterion (tests and plug-ins that register one for a while)."""
    _CRITERIA.unregister(name)


def names(where: str) -> tuple[str, ...]:
    """The names that apply at ``where`` (one of :data:`PLACES`), in registration order."""
    return _CRITERIA.names(_at(where))


def get(name: str, where: str) -> type[Criterion]:
    """The class registered as ``name``; refused in one line when unknown or when it does not apply at ``where``."""
    return _CRITERIA.get(name, PLACES[where], _at(where), _places)


def create(name: str, where: str, seed: int = 0) -> Any:
    """A fresh criterion object (an :class:`~prunekit.importance.base.Importance`) for ``name`` at ``where``
    (seeded, for criteria that draw at random)."""
    return get(name, where).build(seed)


def describe(where: str | None = None) -> dict[str, str]:
    """``name → one-line help`` with what it needs, for the criteria at ``where`` (all when None): the
    text a CLI option's help can list."""
    return _CRITERIA.describe(_at(where))


class Names(Sequence[str]):
    """A live, read-only tuple of names read from a registry on every use, so a criterion or solver
    registered later is accepted by every check that reads the constant (``METHODS``, ``CRITERIA``, ...)."""

    def __init__(self, read: Callable[[], tuple[str, ...]]) -> None:
        self._read = read

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[str, ...]: ...
    def __getitem__(self, i: int | slice) -> str | tuple[str, ...]:
        return self._read()[i]

    def __len__(self) -> int:
        return len(self._read())

    def __iter__(self) -> Iterator[str]:
        return iter(self._read())

    def __contains__(self, name: object) -> bool:
        return name in self._read()

    def __eq__(self, other: object) -> bool:
        return tuple(self) == (tuple(other) if isinstance(other, Sequence) else other)

    __hash__ = None  # type: ignore[assignment] - it changes as the registry does

    def __add__(self, other: Sequence[str]) -> tuple[str, ...]:
        return (*self, *other)

    def __repr__(self) -> str:
        return repr(self._read())
