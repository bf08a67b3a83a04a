"""Long runs survive a kill: checkpoints in the temporary output, and the same command resumes from them
with exactly the metrics of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prunekit.config import DataOptions, PruneSettings, TrainOptions
from prunekit.io.atomic import CHECKPOINT_DIR, OWNER_FILE
from prunekit.pipeline import finetune, prune
from prunekit.train import checkpoint as ckpt_module

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "OMP_NUM_THREADS": "1"}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "prunekit.cli", *args]


def _temps(out: Path) -> list[Path]:
    return list(out.parent.glob(f".{out.name}.tmp-*"))


def _step_checkpoints(out: Path) -> list[Path]:
    return list(out.parent.glob(f".{out.name}.tmp-*/{CHECKPOINT_DIR}/train-*-step-*"))


def _kill_at_first_checkpoint(cmd: list[str], out: Path, timeout: float = 300) -> None:
    """Start ``cmd``, SIGKILL it as soon as a mid-training checkpoint exists, and check it was running."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not _step_checkpoints(out):
        assert proc.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"


def _metrics(out: Path) -> list[tuple]:
    report = json.loads((out / "report.json").read_text())
    return [(s["name"], s["metrics"], s["validation_metrics"], s["sparsity"]) for s in report["stages"]]


def _clean(out: Path) -> None:
    assert not _temps(out), "no temporary may remain after a finished run"
    assert not (out / CHECKPOINT_DIR).exists() and not (out / OWNER_FILE).exists()


def test_killed_prune_resumes_to_the_same_metrics(tiny_classifier, tiny_csv, tmp_path):
    args = ["prune", "-m", str(tiny_classifier), "-d", str(tiny_csv), "--sparsity", "0.5", "--steps", "2",
            "--finetune-epochs", "2.5", "--batch-size", "16", "--lr", "1e-3", "--no-latency",
            "--checkpoint-every", "5"]
    ref, out = tmp_path / "ref", tmp_path / "out"
    subprocess.run(_cli(*args, "--out", str(ref)), env=ENV, check=True, capture_output=True)
    _kill_at_first_checkpoint(_cli(*args, "--out", str(out)), out)
    assert not out.exists() and len(_temps(out)) == 1
    done = subprocess.run(_cli(*args, "--out", str(out)), env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming from step" in done.stderr and "of 30" in done.stderr
    assert _metrics(out) == _metrics(ref)
    _clean(out)


class _Interrupt:
    """Raise KeyboardInterrupt (Ctrl-C) right after the n-th mid-training checkpoint is written."""

    def __init__(self, monkeypatch, n: int = 1) -> None:
        self.left, self.original = n, ckpt_module.TrainCheckpoint.save
        self.monkeypatch = monkeypatch

        def save(ckpt, name, *args, **kwargs):
            self.original(ckpt, name, *args, **kwargs)
            if "-step-" in name:
                self.left -= 1
                if self.left == 0:
                    raise KeyboardInterrupt

        monkeypatch.setattr(ckpt_module.TrainCheckpoint, "save", save)

    def undo(self) -> None:
        self.monkeypatch.setattr(ckpt_module.TrainCheckpoint, "save", self.original)


@pytest.mark.parametrize("schedule", ["iterative", "gradual"])
def test_interrupted_prune_resumes_in_process(tiny_classifier, tiny_csv, tmp_path, monkeypatch, capsys, schedule):
    """Ctrl-C keeps the temporary with its checkpoints; the same call resumes (an earlier finished
    training call is loaded, not repeated) and ends with the uninterrupted run's metrics."""
    data = DataOptions(str(tiny_csv))
    settings = PruneSettings(sparsity=0.6, schedule=schedule, steps=2, finetune_epochs=2, lr=1e-3, batch_size=16,
                             latency=schedule == "gradual", method="movement" if schedule == "gradual" else "magnitude")
    opts = ckpt_module.CheckpointOptions(every=4)
    ref = prune(str(tiny_classifier), data, tmp_path / "ref", settings, checkpoint=opts)
    out = tmp_path / "out"
    interrupt = _Interrupt(monkeypatch, n=3 if schedule == "iterative" else 4)  # in step 2; gradual: after step_1
    with pytest.raises(KeyboardInterrupt):
        prune(str(tiny_classifier), data, out, settings, checkpoint=opts)
    interrupt.undo()
    assert not out.exists() and len(_temps(out)) == 1
    capsys.readouterr()
    again = prune(str(tiny_classifier), data, out, settings, checkpoint=opts)
    err = capsys.readouterr().err
    assert "resuming from step" in err
    if schedule == "iterative":
        assert "finished before the interruption" in err
    strip = [(s["name"], s["metrics"], s["validation_metrics"], s["sparsity"]) for s in ref["stages"]]
    assert [(s["name"], s["metrics"], s["validation_metrics"], s["sparsity"]) for s in again["stages"]] == strip
    if settings.latency:  # stage records restored from the checkpoint are timed at the end like the others
        assert all(s["latency_ms"] for s in again["stages"]) and len(again["stages"]) == 3
    _clean(out)


def test_interrupted_structured_prune_and_finetune_resume(tiny_classifier, tiny_csv, tmp_path, monkeypatch, capsys):
    """Structured pruning (the cut replayed, the first recovery loaded, the second resumed) and finetune."""
    data = DataOptions(str(tiny_csv))
    settings = PruneSettings(heads=0.5, ffn=0.5, steps=2, finetune_epochs=2, lr=1e-3, batch_size=16, latency=False)
    opts = ckpt_module.CheckpointOptions(every=4)
    runs = {"prune": lambda out: prune(str(tiny_classifier), data, out, settings, checkpoint=opts),
            "finetune": lambda out: finetune(str(tiny_classifier), data, out, TrainOptions(epochs=2, lr=1e-3,
                                             batch_size=16), latency=False, checkpoint=opts)}
    for name, run in runs.items():
        ref = run(tmp_path / f"{name}-ref")
        interrupt = _Interrupt(monkeypatch, n=3)  # prune: in recovery step 2; finetune: at step 12 of 24
        with pytest.raises(KeyboardInterrupt):
            run(tmp_path / name)
        interrupt.undo()
        capsys.readouterr()
        again = run(tmp_path / name)
        assert "resuming from step" in capsys.readouterr().err
        assert [(s["name"], s["metrics"], s["params_nonzero"]) for s in again["stages"]] == \
            [(s["name"], s["metrics"], s["params_nonzero"]) for s in ref["stages"]]
        _clean(tmp_path / name)


def test_no_resume_starts_over(tiny_classifier, tiny_csv, tmp_path, monkeypatch, capsys):
    data = DataOptions(str(tiny_csv))
    interrupt = _Interrupt(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        finetune(str(tiny_classifier), data, tmp_path / "out", TrainOptions(epochs=1, batch_size=16),
                 latency=False, checkpoint=ckpt_module.CheckpointOptions(every=3))
    interrupt.undo()
    capsys.readouterr()
    finetune(str(tiny_classifier), data, tmp_path / "out", TrainOptions(epochs=1, batch_size=16), resume=False,
             latency=False)
    err = capsys.readouterr().err
    assert "resuming" not in err and f"the unfinished output of dead process {os.getpid()}" in err
    _clean(tmp_path / "out")


def test_interrupted_recipe_resumes_skipping_finished_stages(tiny_classifier, tiny_csv, tmp_path, monkeypatch,
                                                              capsys):
    """`prunekit run`: finished stages are not measured again (their records come from the checkpoint),
    the finished training stage is loaded, the one in progress resumes; the report equals the
    uninterrupted run's."""
    from prunekit import recipe as recipe_module
    from prunekit.recipe import run_recipe

    recipe = {"model": str(tiny_classifier), "data": {"data": str(tiny_csv)}, "seed": 3,
              "latency": {"rounds": 0},
              "stages": [{"finetune": {"epochs": 1, "lr": 1e-3, "batch_size": 16}},
                         {"prune": {"sparsity": 0.5}},
                         {"finetune": {"epochs": 1.5, "lr": 1e-3, "batch_size": 16, "name": "recover"}},
                         {"fake_quant": {"bits": 8}}]}
    opts = ckpt_module.CheckpointOptions(every=4)
    ref = run_recipe(recipe, tmp_path / "ref", checkpoint=opts)
    out = tmp_path / "out"
    interrupt = _Interrupt(monkeypatch, n=4)  # 1st finetune: steps 4, 8; recover: steps 4, 8 → killed at 8
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe, out, checkpoint=opts)
    interrupt.undo()
    measured = []
    original = recipe_module._measure
    monkeypatch.setattr(recipe_module, "_measure", lambda state, name, *a, **k: (measured.append(name),
                                                                                original(state, name, *a, **k)))
    capsys.readouterr()
    again = run_recipe(recipe, out, checkpoint=opts)
    err = capsys.readouterr().err
    assert "2 of 4 stages finished" in err and "resuming from step 8 of 18" in err
    assert measured == ["recover", "04-fake_quant"], "finished stages must not be measured again"
    keys = ("name", "kind", "metrics", "validation_metrics", "params_nonzero", "disk_bytes")
    assert [[s[k] for k in keys] for s in again["stages"]] == [[s[k] for k in keys] for s in ref["stages"]]
    assert json.loads((out / "report.json").read_text())["stages"][0]["name"] == "baseline"
    _clean(out)


@pytest.mark.parametrize("command", ["prune", "finetune", "run"])
def test_cli_flags_and_bad_cadence(command, tmp_path):
    import typer
    from typer.testing import CliRunner

    from prunekit.cli import app

    runner = CliRunner()
    flags = {o for p in typer.main.get_command(app).commands[command].params for o in p.opts + p.secondary_opts}
    assert {"--resume", "--no-resume", "--checkpoint-every", "--checkpoint-minutes"} <= flags
    args = {"prune": ["-m", "x", "-d", "y"], "finetune": ["-m", "x", "-d", "y"], "run": [str(tmp_path / "r.yaml")]}
    result = runner.invoke(app, [command, *args[command], "--out", str(tmp_path / "o"), "--checkpoint-every", "0"])
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "--checkpoint-every" in lines[0]
