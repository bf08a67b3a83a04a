"""The saved formats :func:`prunekit.load` recognises, as a registry each format module adds itself to.

A format is a name, ``detect(folder) -> bool``, ``load(folder, trust_remote_code) -> nn.Module`` and a
priority: :func:`load_saved` asks the formats in descending priority and loads with the first whose
``detect`` says yes. Each format registers at import, in its own module: text nets in
:mod:`prunekit.io.textnet`, int8 in :mod:`prunekit.quant.saved`, structured manifests and packed sparse
weights in :mod:`prunekit.io.shapes`, plain transformers folders (the fallback) in :mod:`prunekit.io.hf`.
:func:`load_saved` imports all of those first (the list is :data:`FORMAT_MODULES`, also
``prunekit.FORMAT_MODULES``), by name: whichever module a caller imported, every built-in format is known.

This module imports nothing of prunekit above ``io/``, so a format in any layer can register without
an import cycle. A second registration under a name replaces the first (a plug-in may override a
built-in format).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from prunekit.errors import PrunekitError
from prunekit.io.damaged import names_damaged_file

#: The modules that register prunekit's built-in saved formats when imported: text nets, int8, structured
#: manifests and packed sparse weights, plain transformers folders. Imported by name on first use (a plug-in
#: list, not a dependency: quant sits above io and registers itself here)
FORMAT_MODULES = ("prunekit.io.textnet", "prunekit.quant.saved", "prunekit.io.shapes", "prunekit.io.hf")
_builtins_imported = False

Detect = Callable[[Path], bool]
Loader = Callable[[Path, bool], nn.Module]


@dataclass(frozen=True)
class SavedFormat:
    """One way a model can be saved; ``looks_for`` names the file(s) ``detect`` checks, for the error message."""

    name: str
    detect: Detect
    load: Loader
    priority: int = 0
    looks_for: str = ""


_FORMATS: dict[str, SavedFormat] = {}


def register_format(name: str, detect: Detect, load: Loader, priority: int = 0, looks_for: str = "") -> SavedFormat:
    """Make :func:`load_saved` (and so :func:`prunekit.load`) recognise a format; returns its entry."""
    if not name:
        raise PrunekitError("a saved format needs a name")
    entry = SavedFormat(name, detect, load, int(priority), looks_for or name)
    _FORMATS.pop(name, None)
    _FORMATS[name] = entry
    return entry


def unregister_format(name: str) -> None:
    """Forget a format (a no-op for an unknown name)."""
    _FORMATS.pop(name, None)


def saved_formats() -> list[SavedFormat]:
    """The registered formats in the order they are asked: highest priority first, then registration order."""
    global _builtins_imported
    if not _builtins_imported:
        _builtins_imported = True
        for module in FORMAT_MODULES:
            importlib.import_module(module)
    return sorted(_FORMATS.values(), key=lambda f: -f.priority)


def format_of(path: str | Path) -> SavedFormat:
    """The format ``path`` is saved in; a folder no format recognises is an error naming what was looked for."""
    folder = Path(path).expanduser()
    for fmt in saved_formats():
        try:
            found = fmt.detect(folder)
        except OSError as err:  # e.g. a name longer than the filesystem allows
            raise PrunekitError(f"model {str(path)[:80]!r}: not a usable path ({err.strerror})") from None
        if found:
            return fmt
    if not _FORMATS:
        raise PrunekitError(f"{folder}: no saved format is registered (import prunekit and use prunekit.load)")
    looked = ", ".join(f.looks_for for f in reversed(saved_formats()))  # the plainest first
    raise PrunekitError(f"{str(path)!r} holds no model prunekit can load (no {looked})")


@names_damaged_file("path")
def load_saved(path: str | Path, trust_remote_code: bool = False) -> nn.Module:
    """Load ``path`` with the first registered format that recognises it."""
    return format_of(path).load(Path(path).expanduser(), trust_remote_code)
