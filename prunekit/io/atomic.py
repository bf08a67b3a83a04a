"""All-or-nothing writes, so an interrupted run never leaves a half-written output folder or file."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from prunekit.errors import PrunekitError


def _sibling(path: Path, tag: str) -> Path:
    """A hidden, unused name next to ``path`` (same filesystem, so renames are atomic)."""
    while True:
        candidate = path.parent / f".{path.name}.{tag}-{secrets.token_hex(4)}"
        if not candidate.exists():
            return candidate


#: what a command reads, by role: {"model": spec, "data": spec, ...}; None and non-paths are skipped
Inputs = Mapping[str, str | Path | None]


def _on_disk(spec: str | Path) -> Path | None:
    """The real location of an input spec, or None when it names nothing on disk (a hub id, a built-in
    name not yet fetched). A built-in name counts as its cached folder, so the cache is protected too."""
    try:
        path = Path(spec).expanduser()
        if not path.exists():
            from prunekit.assets import get

            asset = get(str(spec))
            path = asset.dest() if asset is not None else path
        return _real(path) if path.exists() else None
    except (ValueError, RuntimeError):  # a NUL byte, an unknown ~user: not a path on disk
        return None


def _real(path: str | Path) -> Path:
    """``path`` with every symlink and ``..`` resolved (also when its tail does not exist yet)."""
    try:
        return Path(path).expanduser().resolve()
    except (OSError, RuntimeError, ValueError) as err:  # a symlink loop, a NUL byte, an unknown ~user
        raise PrunekitError(f"cannot resolve {path}: {err}") from None


def check_outside_inputs(out: str | Path, inputs: Inputs, flag: str = "--out") -> None:
    """Refuse an output that is, lies inside, or contains anything the command reads.

    ``--force`` replaces ``out`` wholesale, so an output on top of its own model (``--out M``, ``--out
    M/sub``, ``--out M/../M``, a symlink to M, ``--out .`` holding the data file) would destroy the
    input, whatever ``force`` says. Symlinks are resolved first; inputs that are not on disk are skipped."""
    target = _real(out)
    for role, spec in inputs.items():
        if not isinstance(spec, str | Path) or str(spec) == "":
            continue
        source = _on_disk(spec)
        if source is None:
            continue
        if target == source:
            how = "is"
        elif source in target.parents:
            how = "is inside"
        elif target in source.parents:
            how = "contains"
        else:
            continue
        kind = "folder" if source.is_dir() else "file"
        raise PrunekitError(f"{flag} {out} {how} the input {role} {kind} {spec}; choose another {flag}")


def check_output_dir(out: str | Path, force: bool = False, inputs: Inputs | None = None) -> None:
    """Fail before any work if ``out`` would be clobbered without ``force``, or (``inputs``) is or
    overlaps a folder or file the command reads (refused even with ``force``)."""
    if inputs:
        check_outside_inputs(out, inputs)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PrunekitError(f"output path {out} exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise PrunekitError(
            f"output folder {out} already exists and is not empty; choose another --out or pass --force"
        )


def _follow_link(out: Path) -> Path:
    """An ``out`` that is a symlink stands for the folder it points at (see :func:`atomic_output_dir`)."""
    return _real(out) if out.is_symlink() else out


@contextmanager
def atomic_output_dir(out: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a temp folder that replaces ``out`` only if the block finishes without error.

    When ``out`` is a symlink, the output goes where it points: the temp folder is made beside the
    link's target and replaces it (with ``force``), and the link stays, now pointing at the new output.
    A dangling link's target is created. Renaming the link itself aside would leave a stray ``.old``
    link and the old folder in place, and renaming a folder onto a dangling link fails."""
    out = _follow_link(Path(out))
    check_output_dir(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(out, "tmp")
    tmp.mkdir()  # plain mkdir (not mkdtemp) so the result gets normal umask permissions
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        check_output_dir(out, force)  # something may have appeared while we worked
    except PrunekitError as err:
        raise PrunekitError(f"{err} (the finished results are in {tmp})") from None
    if not out.exists():
        os.rename(tmp, out)
    elif not any(out.iterdir()):
        out.rmdir()
        os.rename(tmp, out)
    else:  # force: move the old folder aside, so `out` is always either old or new, never partial
        old = _sibling(out, "old")
        os.rename(out, old)
        try:
            os.rename(tmp, out)
        except BaseException:
            os.rename(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write to a hidden sibling, then rename over ``path``: readers see the old or the new file."""
    path = Path(path)
    tmp = _sibling(path, "tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Atomically write UTF-8 text."""
    write_bytes_atomic(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    """Make the usual non-JSON types in reports (paths, numpy/torch scalars) serialisable."""
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy arrays/scalars and torch tensors
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Atomically write ``obj`` as pretty JSON."""
    write_text_atomic(path, json.dumps(obj, indent=2, default=_json_default) + "\n")
