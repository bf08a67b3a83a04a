"""All-or-nothing writes, so an interrupted run never leaves a half-written output folder or file."""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from prunekit.assets import get
from prunekit.errors import PrunekitError
from prunekit.runtime import log


def sibling(path: Path, tag: str) -> Path:
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


#: inside a temporary output: who is writing it (removed before the rename, never in ``--out``)
OWNER_FILE = ".prunekit-owner.json"
#: inside a temporary output: training checkpoints a rerun of the same command resumes from
CHECKPOINT_DIR = ".prunekit-checkpoint"
#: a temporary without an owner record younger than this may be one being created right now
_NO_RECORD_GRACE_SECONDS = 60.0
_ACTIVE: set[Path] = set()  # temporaries this process is writing right now


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), so a reused pid is not its owner."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except OSError:
        return False
    return True


def owner_record(fingerprint: str | None = None) -> dict[str, Any]:
    """This process as the owner of a temporary: pid + start time + boot id (a reused pid or a reboot is
    not mistaken for the owner), host, and the fingerprint of the command writing it."""
    pid = os.getpid()
    return {"pid": pid, "start_time": _start_time(pid), "boot_id": _boot_id(), "host": socket.gethostname(),
            "fingerprint": fingerprint}


def owner_alive(record: dict[str, Any]) -> bool:
    """Whether the process that wrote ``record`` may still be writing (another host: assume so)."""
    if record.get("host") != socket.gethostname():
        return True
    pid = record.get("pid")
    if not isinstance(pid, int):
        return False
    boot = _boot_id()
    if record.get("boot_id") and boot and record["boot_id"] != boot:
        return False
    if pid == os.getpid():  # an earlier, interrupted call in this same process (a notebook) is over
        return False
    if not _pid_running(pid):
        return False
    started = _start_time(pid)
    return not (record.get("start_time") and started and started != record["start_time"])


def _read_owner(tmp: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((tmp / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def stale_temporaries(out: str | Path) -> list[tuple[Path, dict[str, Any] | None]]:
    """The temporaries of ``out`` whose owner is gone (killed runs), each with its owner record (None when
    it has none: written by an older prunekit, or killed before the record), oldest first."""
    out = Path(out)
    if not out.parent.is_dir():
        return []
    found = []
    for tmp in out.parent.glob(f".{glob.escape(out.name)}.tmp-*"):
        if not tmp.is_dir() or tmp.is_symlink() or tmp.resolve() in _ACTIVE:
            continue
        record = _read_owner(tmp)
        if record is None:
            with suppress(OSError):
                if time.time() - tmp.stat().st_mtime > _NO_RECORD_GRACE_SECONDS:
                    found.append((tmp, None))
        elif not owner_alive(record):
            found.append((tmp, record))
    return sorted(found, key=lambda item: item[0].stat().st_mtime)


def _adopt_or_clean(out: Path, fingerprint: str | None, resume: bool) -> Path | None:
    """Remove the dead runs' temporaries of ``out``, saying so; with ``resume``, keep and return the newest
    one that holds a checkpoint of the same command (same ``fingerprint``) instead."""
    stale = stale_temporaries(out)
    adopt = None
    if resume and fingerprint is not None:
        for tmp, record in reversed(stale):
            if record and record.get("fingerprint") == fingerprint and (tmp / CHECKPOINT_DIR).is_dir():
                adopt = tmp
                break
    for tmp, record in stale:
        if tmp == adopt:
            continue
        who = f"dead process {record.get('pid')}" if record else "a run with no owner record"
        shutil.rmtree(tmp, ignore_errors=True)
        log(f"removed {tmp}, the unfinished output of {who}")
    return adopt


@contextmanager
def atomic_output_dir(out: str | Path, force: bool = False, *, fingerprint: str | None = None,
                      resume: bool = True) -> Iterator[Path]:
    """Yield a temp folder that replaces ``out`` only if the block finishes without error.

    The temp folder holds an owner record from the start, so a later run to the same ``out`` can tell
    a killed run's leftovers from a live one's: dead runs' temporaries are removed, except that with
    ``resume`` the newest one holding a checkpoint (:data:`CHECKPOINT_DIR`) of the same command
    (``fingerprint``) is adopted and yielded again. The owner record and the checkpoints never reach
    ``out``. On Ctrl-C a temporary holding a checkpoint is kept, so the same command resumes from it.

    When ``out`` is a symlink, the output goes where it points: the temp folder is made beside the
    link's target and replaces it (with ``force``), and the link stays, now pointing at the new output.
    A dangling link's target is created. Renaming the link itself aside would leave a stray ``.old``
    link and the old folder in place, and renaming a folder onto a dangling link fails."""
    out = _follow_link(Path(out))
    check_output_dir(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _adopt_or_clean(out, fingerprint, resume)
    if tmp is None:
        tmp = sibling(out, "tmp")
        tmp.mkdir()  # plain mkdir (not mkdtemp) so the result gets normal umask permissions
    write_json_atomic(tmp / OWNER_FILE, owner_record(fingerprint))
    _ACTIVE.add(tmp.resolve())
    try:
        yield tmp
    except KeyboardInterrupt:
        if (tmp / CHECKPOINT_DIR).is_dir():
            log(f"kept the checkpoint in {tmp}: run the same command again to resume (--no-resume starts over)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        _ACTIVE.discard(tmp.resolve())
    try:
        check_output_dir(out, force)  # something may have appeared while we worked
    except PrunekitError as err:
        raise PrunekitError(f"{err} (the finished results are in {tmp})") from None
    shutil.rmtree(tmp / CHECKPOINT_DIR, ignore_errors=True)
    with suppress(FileNotFoundError):
        (tmp / OWNER_FILE).unlink()
    if not out.exists():
        os.rename(tmp, out)
    elif not any(out.iterdir()):
        out.rmdir()
        os.rename(tmp, out)
    else:  # force: move the old folder aside, so `out` is always either old or new, never partial
        old = sibling(out, "old")
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
    tmp = sibling(path, "tmp")
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


def json_default(obj: Any) -> Any:
    """Make the usual non-JSON types in reports (paths, numpy/torch scalars) serialisable."""
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy arrays/scalars and torch tensors
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Atomically write ``obj`` as pretty JSON."""
    write_text_atomic(path, json.dumps(obj, indent=2, default=json_default) + "\n")
