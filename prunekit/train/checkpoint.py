"""Training checkpoints in a command's temporary output, so a killed run resumes where it stopped.

A command (``prune``, ``finetune``, ``run``) opens :func:`resumable` on its temporary output folder; every
:func:`~prunekit.train.loop.train` call inside it is then numbered in order and

- saves its whole state (weights, masks, optimizer, scheduler, RNG, data order, step, importance scores and
  the caller's own state) every ``every`` steps or ``minutes`` minutes, whichever comes first;
- saves its final state when it ends.

Rerunning the same command (same fingerprint, see :func:`fingerprint`) replays the deterministic work
between training calls and, instead of training again, loads each finished call's final state and
continues the unfinished one from its last checkpoint: a seeded resumed run ends bit-identical to an
uninterrupted one. Each checkpoint is a folder written under a hidden name and renamed into place, so a
kill during a write leaves the previous checkpoint intact. Tensors are safetensors; the optimizer,
scheduler and RNG states (written by the run itself, in its own temporary) are torch files loaded with
``weights_only=True``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.io.atomic import CHECKPOINT_DIR, json_default, sibling, write_json_atomic
from prunekit.runtime import accelerator


@dataclass
class CheckpointOptions:
    """How often training saves a checkpoint (whichever comes first)."""

    every: int = 200  # steps
    minutes: float = 10.0

    def validate(self) -> CheckpointOptions:
        if self.every < 1 or self.minutes <= 0:
            raise PrunekitError("--checkpoint-every must be >= 1 step and --checkpoint-minutes > 0")
        return self


class ExtraState(Protocol):
    """A caller's own state that changes during training (a gradual schedule's target and records)."""

    def dump(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]: ...

    def load(self, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None: ...


def fingerprint(command: str, **parts: Any) -> str:
    """A hash of the command name, its inputs (paths resolved, with their size and modification time,
    so an edited input is a different command) and its settings and seed."""

    def resolve(value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): resolve(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [resolve(v) for v in value]
        if isinstance(value, str | Path) and str(value) and Path(value).expanduser().exists():
            path = Path(value).expanduser().resolve()
            stats = [path.stat()] + ([p.stat() for p in path.iterdir()] if path.is_dir() else [])
            return {"path": str(path), "size": sum(s.st_size for s in stats),
                    "mtime_ns": max(s.st_mtime_ns for s in stats)}
        return value

    text = json.dumps({"command": command, **resolve(parts)}, sort_keys=True, default=json_default)
    return hashlib.sha256(text.encode()).hexdigest()


def rng_state() -> dict[str, Any]:
    """Every RNG a training step draws from, in types ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
            "python": [version, list(internal), gauss]}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


@dataclass
class Saved:
    """One checkpoint as loaded: its meta (step, epoch, …) and torch state (optimizer, scheduler, RNG)."""

    meta: dict[str, Any]
    state: dict[str, Any]
    extra: dict[str, torch.Tensor]


class Checkpoints:
    """The checkpoints of one command, in ``folder`` (inside its temporary output)."""

    def __init__(self, folder: Path, options: CheckpointOptions) -> None:
        self.folder, self.options = folder, options
        self.calls = 0
        folder.mkdir(exist_ok=True)
        for junk in folder.glob(".*"):  # checkpoints a kill interrupted mid-write
            shutil.rmtree(junk, ignore_errors=True)

    def call(self, desc: str) -> TrainCheckpoint:
        """The next training call's checkpoints (calls are numbered in the order they run)."""
        self.calls += 1
        return TrainCheckpoint(self, self.calls, desc)


class TrainCheckpoint:
    """Save and load the checkpoints of the n-th training call of a command."""

    def __init__(self, owner: Checkpoints, n: int, desc: str) -> None:
        self.owner, self.prefix, self.desc = owner, f"train-{n:03d}", desc
        self.last_save = time.monotonic()

    def _partials(self) -> list[Path]:
        return sorted(self.owner.folder.glob(f"{self.prefix}-step-*"))

    def _done(self) -> Path:
        return self.owner.folder / f"{self.prefix}-done"

    def due(self, step: int) -> bool:
        o = self.owner.options
        return step % o.every == 0 or time.monotonic() - self.last_save >= 60 * o.minutes

    def save(self, name: str, modules: dict[str, nn.Module | None], tensors: dict[str, dict[str, torch.Tensor]],
             state: dict[str, Any], meta: dict[str, Any]) -> None:
        """Write one checkpoint folder under a hidden name, then rename it into place (a kill mid-write
        leaves the previous one whole), then drop this call's older step checkpoints."""
        final = self.owner.folder / name
        if final.exists():
            return
        tmp = sibling(final, "tmp")
        tmp.mkdir()
        for key, module in modules.items():
            if module is not None:
                save_model(module, str(tmp / f"{key}.safetensors"))
        for key, group in tensors.items():
            if group:
                save_file({k: v.detach().contiguous().cpu() for k, v in group.items()}, str(tmp / f"{key}.safetensors"))
        torch.save(state, tmp / "state.pt")
        write_json_atomic(tmp / "meta.json", {"desc": self.desc, **meta})
        tmp.rename(final)
        for old in self._partials():
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
        self.last_save = time.monotonic()

    def latest(self) -> tuple[bool, Path] | None:
        """(finished?, folder) of this call's newest checkpoint, if the command is resuming."""
        if self._done().is_dir():
            return True, self._done()
        partials = self._partials()
        return (False, partials[-1]) if partials else None

    def meta(self, folder: Path) -> dict[str, Any]:
        return json.loads((folder / "meta.json").read_text())

    def load(self, folder: Path, modules: dict[str, nn.Module | None], device: torch.device) -> Saved:
        """Load weights into ``modules`` and return the rest."""
        meta = self.meta(folder)
        for key, module in modules.items():
            if module is not None:
                load_model(module, str(folder / f"{key}.safetensors"), device=str(device))
        state = torch.load(folder / "state.pt", weights_only=True)
        extra = {p.stem: load_file(str(p)) for p in folder.glob("*.safetensors") if p.stem not in modules}
        return Saved(meta, state, extra)

    def finished(self) -> None:
        for old in self._partials():
            shutil.rmtree(old, ignore_errors=True)


_ACTIVE: list[Checkpoints] = []


def active_call(desc: str) -> TrainCheckpoint | None:
    """The checkpoints of the training call about to run, when a command is checkpointing."""
    return _ACTIVE[-1].call(desc) if _ACTIVE else None


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """No checkpoints inside the block: for training whose state lives outside the model (L0 gates'
    trajectory), which a rerun then repeats from its start."""
    saved = _ACTIVE[:]
    _ACTIVE.clear()
    try:
        yield
    finally:
        _ACTIVE[:] = saved


@contextlib.contextmanager
def resumable(tmp: Path | None, options: CheckpointOptions | None) -> Iterator[Checkpoints | None]:
    """Checkpoint every training call inside the block into ``tmp`` (None: no checkpoints, e.g. on the
    non-main processes of a distributed run, where only the main one writes; several processes are not
    checkpointed, since they would have to resume together)."""
    options = options or CheckpointOptions()
    if tmp is None or accelerator().num_processes > 1:
        yield None
        return
    checkpoints = Checkpoints(Path(tmp) / CHECKPOINT_DIR, options.validate())
    _ACTIVE.append(checkpoints)
    try:
        yield checkpoints
    finally:
        _ACTIVE.remove(checkpoints)
