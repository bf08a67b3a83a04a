"""All-or-nothing writes, so an interrupted run never leaves a half-written output folder or file."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
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


def check_output_dir(out: str | Path, force: bool = False) -> None:
    """Fail before any work if ``out`` would be clobbered without ``force``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PrunekitError(f"output path {out} exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise PrunekitError(
            f"output folder {out} already exists and is not empty; choose another --out or pass --force"
        )


@contextmanager
def atomic_output_dir(out: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a temp folder that replaces ``out`` only if the block finishes without error."""
    out = Path(out)
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
