"""Process-wide runtime facts: device, seeding, cores and the one `accelerate.Accelerator`; and the one timing
loop every latency prunekit reports goes through (torch in :mod:`prunekit.report.measure`, onnxruntime in
:mod:`prunekit.io.onnx`), kept here, below both, so the numbers are comparable."""

from __future__ import annotations

import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

_ACCELERATOR = None
MAX_REPEATS, MIN_REPEATS = 50, 3
#: builds the inputs of one timed forward: ``make_inputs(batch, seq_len) -> {name: tensor}``
MakeInputs = Callable[[int, int], dict[str, torch.Tensor]]


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


def cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def median_ms(
    run: Callable[[], Any], warmup: int = 2, repeats: int | None = None, min_seconds: float = 1.0
) -> float:
    """Median wall time of ``run()`` in ms: the one timing loop behind every latency prunekit reports
    (torch in :mod:`prunekit.report.measure`, onnxruntime in :mod:`prunekit.io.onnx`), so the numbers are comparable.

    Without ``repeats`` it runs until ``min_seconds`` are spent (3 to 50 runs), so fast models get
    enough samples and slow ones do not take forever.
    """
    for _ in range(warmup):
        run()
    times: list[float] = []
    while True:
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
        if repeats is not None:
            done = len(times) >= repeats
        else:
            done = (len(times) >= MIN_REPEATS and sum(times) >= min_seconds) or len(times) >= MAX_REPEATS
        if done:
            return statistics.median(times) * 1000.0
