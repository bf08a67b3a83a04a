"""Process-wide runtime facts: device, seeding and the one `accelerate.Accelerator`."""

from __future__ import annotations

import os
import random
import sys

import numpy as np
import torch

_ACCELERATOR = None


def accelerator():
    """The process's Accelerator (created once: accelerate keeps global state per process).

    Under ``accelerate launch`` it joins the process group, so the same code trains on several GPUs
    or CPU processes; on a plain run it is a single process on CUDA when present, else CPU.
    """
    global _ACCELERATOR
    if _ACCELERATOR is None:
        from accelerate import Accelerator

        # Without a GPU, say so explicitly: only then does accelerate join a multi-process CPU
        # group (gloo) when started by `accelerate launch`/torchrun.
        _ACCELERATOR = Accelerator(cpu=not torch.cuda.is_available())
    return _ACCELERATOR


def default_device() -> torch.device:
    return accelerator().device


def seed_everything(seed: int) -> None:
    """Same seed → same masks and metrics on CPU (GPU kernels may still differ in the last bits)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


def is_main_process() -> bool:
    return accelerator().is_main_process


def log(msg: str) -> None:
    """One progress line on stderr, from the main process only (every layer logs through this)."""
    if is_main_process():
        print(f"[prunekit] {msg}", file=sys.stderr, flush=True)
