"""Two CPU processes (gloo) under torchrun, as `accelerate launch` starts them: masks and weights agree."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def _free_port() -> int:
    """A port nobody listens on now (the OS picks it), so parallel or repeated runs never collide."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_cpu_processes_keep_masks_and_weights_identical(trained_tiny, tmp_path):
    clf, csv = trained_tiny
    digests = tmp_path / "digests"
    digests.mkdir()
    worker = Path(__file__).with_name("ddp_worker.py")
    # torchrun is what `accelerate launch` runs underneath; Accelerator() joins the group from its env
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           str(worker), str(clf), str(csv), str(tmp_path / "out"), str(digests)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    if proc.returncode != 0:
        pytest.fail(f"accelerate launch failed:\n{proc.stderr[-3000:]}")
    ranks = [json.loads((digests / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["backend"] == "gloo"
    assert ranks[0]["masks"] == ranks[1]["masks"]
    assert ranks[0]["weights"] == ranks[1]["weights"]
    assert ranks[0]["sparsity"] == pytest.approx(0.6, abs=0.002)
    assert (tmp_path / "out" / "report.json").exists()  # written once, by the main process
