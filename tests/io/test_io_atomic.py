import json
import re

import pytest

from prunekit.errors import PrunekitError
from prunekit.io.atomic import atomic_output_dir, check_output_dir, write_json_atomic, write_text_atomic


def leftovers(parent):
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


def test_success_moves_temp_into_place(tmp_path):
    out = tmp_path / "nested" / "run"
    with atomic_output_dir(out) as tmp:
        assert tmp.parent == out.parent and tmp.name.startswith(".run.tmp-")
        assert not out.exists()
        (tmp / "a.txt").write_text("hi")
    assert (out / "a.txt").read_text() == "hi"
    assert leftovers(out.parent) == []


def test_failure_leaves_nothing(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValueError), atomic_output_dir(out) as tmp:
        (tmp / "half.txt").write_text("partial")
        raise ValueError("boom")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_non_empty_is_refused_up_front(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "old.txt").write_text("keep me")
    with pytest.raises(PrunekitError, match="already exists and is not empty.*--force"):
        check_output_dir(out)
    with pytest.raises(PrunekitError, match="not empty"), atomic_output_dir(out):
        pytest.fail("body must not run")
    assert (out / "old.txt").read_text() == "keep me"
    assert leftovers(tmp_path) == []


def test_empty_existing_folder_is_fine(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    check_output_dir(out)
    with atomic_output_dir(out) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new.txt"]


def test_force_replaces_old_folder(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "old.txt").write_text("old")
    check_output_dir(out, force=True)
    with atomic_output_dir(out, force=True) as tmp:
        assert (out / "old.txt").exists()  # old output stays until the new one is complete
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert leftovers(tmp_path) == []


def test_force_failure_keeps_old_folder(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_output_dir(out, force=True):
        raise KeyboardInterrupt
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    assert leftovers(tmp_path) == []


def test_file_in_the_way_is_refused(tmp_path):
    (tmp_path / "run").write_text("x")
    with pytest.raises(PrunekitError, match="not a folder"):
        check_output_dir(tmp_path / "run", force=True)


def test_atomic_file_writes(tmp_path):
    write_text_atomic(tmp_path / "a.md", "one")
    write_text_atomic(tmp_path / "a.md", "two")
    assert (tmp_path / "a.md").read_text() == "two"
    write_json_atomic(tmp_path / "r.json", {"path": tmp_path, "x": [1.5]})
    assert json.loads((tmp_path / "r.json").read_text()) == {"path": str(tmp_path), "x": [1.5]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.md", "r.json"]


# --- --out never on top of an input; symlinked --out ----------------------------------------------------------


def _model_folder(root):
    model = root / "M"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "vocab.txt").write_text("[PAD]\n")
    return model


@pytest.mark.parametrize(("out", "how"), [
    ("M", "is the input model folder"),
    ("M/sub", "is inside the input model folder"),
    ("M/../M/", "is the input model folder"),
    ("M/a/b/../c", "is inside the input model folder"),
    (".", "contains the input model folder"),
    ("link", "is the input model folder"),
    ("link/x", "is inside the input model folder"),
])
def test_out_on_an_input_folder_is_refused_even_with_force(tmp_path, monkeypatch, out, how):
    model = _model_folder(tmp_path)
    (tmp_path / "link").symlink_to(model, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    for force in (False, True):
        with pytest.raises(PrunekitError, match=f"^--out {re.escape(out)} {how} M; choose another --out$"):
            check_output_dir(out, force, inputs={"model": "M", "data": None})
    assert sorted(p.name for p in model.iterdir()) == ["config.json", "vocab.txt"]


def test_input_files_may_not_be_overwritten_or_swallowed(tmp_path, monkeypatch):
    """A recipe/plan/data *file*'s folder is not an input, but --out may not be the file or a folder above it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "plan.yaml").write_text("x")
    check_output_dir("runs/p", inputs={"plan": "runs/plan.yaml"})  # a sibling of the file: fine
    with pytest.raises(PrunekitError, match="--out runs/plan.yaml is the input plan file runs/plan.yaml"):
        check_output_dir("runs/plan.yaml", True, inputs={"plan": "runs/plan.yaml"})
    with pytest.raises(PrunekitError, match="--out runs contains the input plan file runs/plan.yaml"):
        check_output_dir("runs", True, inputs={"plan": "runs/plan.yaml"})


def test_names_that_are_not_on_disk_are_not_folders(tmp_path, monkeypatch):
    """Hub ids and built-in names are checked only as far as they exist: a built-in name as its cached folder."""
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    inputs = {"model": "prajjwal1/bert-tiny", "data": "movie-reviews", "teacher": "minilm"}
    check_output_dir("prajjwal1/bert-tiny", inputs=inputs)
    check_output_dir("minilm", inputs=inputs)
    cached = tmp_path / "cache" / "assets" / "all-MiniLM-L6-v2"
    cached.mkdir(parents=True)
    with pytest.raises(PrunekitError, match="is inside the input teacher folder minilm"):
        check_output_dir(cached / "sub", True, inputs=inputs)


def test_force_through_a_symlink_replaces_the_folder_it_points_at(tmp_path):
    """The link stays and points at the new output; no stray `.old` link, the old contents are gone."""
    target = tmp_path / "disk" / "run"
    target.mkdir(parents=True)
    (target / "old.txt").write_text("old")
    link = tmp_path / "run"
    link.symlink_to(target, target_is_directory=True)
    with atomic_output_dir(link, force=True) as tmp:
        assert tmp.parent == target.parent  # built beside the real folder: the final rename stays on its disk
        (tmp / "new.txt").write_text("new")
    assert link.is_symlink() and link.resolve() == target.resolve()
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert leftovers(tmp_path) == [] and leftovers(target.parent) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk", "run"]


def test_dangling_symlink_out_creates_its_target(tmp_path):
    link = tmp_path / "run"
    link.symlink_to(tmp_path / "elsewhere" / "run")
    with atomic_output_dir(link) as tmp:
        (tmp / "new.txt").write_text("new")
    assert link.is_symlink() and (tmp_path / "elsewhere" / "run" / "new.txt").read_text() == "new"
    assert leftovers(tmp_path) == [] and leftovers(tmp_path / "elsewhere") == []


def test_every_python_api_entry_refuses_out_on_its_model_before_any_work(tmp_path):
    """The check sits where CLI and API both pass: the model folder here is not even loadable."""
    from prunekit.config import DataOptions
    from prunekit.io.onnx import export_onnx
    from prunekit.pipeline import finetune, prune
    from prunekit.pipeline_lm import prune_lm
    from prunekit.recipe import run_recipe
    from prunekit.search.api import search, sensitivity

    model = _model_folder(tmp_path)
    data = DataOptions(str(tmp_path / "missing.csv"))
    spec = str(model)
    calls = [
        lambda: prune(spec, data, model, force=True),
        lambda: finetune(spec, data, model / "sub"),
        lambda: prune_lm(spec, "wikipedia", f"{model}/../M", force=True),
        lambda: run_recipe({"model": spec, "data": {"data": "x.csv"}, "stages": ["int8"]}, model, force=True),
        lambda: sensitivity(spec, data, model, force=True),
        lambda: search(spec, data, tmp_path, "params=0.5", force=True),
        lambda: export_onnx(spec, model / "model.onnx", force=True),
    ]
    for call in calls:
        with pytest.raises(PrunekitError, match=r"^--(out|onnx) .* the input model folder .*; choose another"):
            call()
    assert sorted(p.name for p in model.iterdir()) == ["config.json", "vocab.txt"]


# --- temporaries of killed runs (issue 19, item 3) ---------------------------------------------------


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _leftover(out, owner: dict | None, checkpoint: bool = False):
    """A temporary like the one a killed run leaves, with ``owner`` as its owner record."""
    from prunekit.io.atomic import CHECKPOINT_DIR, OWNER_FILE, owner_record

    tmp = out.parent / f".{out.name}.tmp-{len(list(out.parent.iterdir())):08x}"
    (tmp / "stages").mkdir(parents=True)
    (tmp / "stages" / "big.bin").write_bytes(b"x" * 1000)
    if owner is not None:
        (tmp / OWNER_FILE).write_text(json.dumps({**owner_record(), **owner}))
    if checkpoint:
        (tmp / CHECKPOINT_DIR).mkdir()
    return tmp


def test_dead_owners_temporaries_are_removed_and_named(tmp_path, capsys):
    out = tmp_path / "run"
    pid = _dead_pid()
    dead = _leftover(out, {"pid": pid})
    with atomic_output_dir(out) as tmp:
        assert not dead.exists()
        (tmp / "a.txt").write_text("new")
    err = capsys.readouterr().err
    assert str(dead) in err and f"dead process {pid}" in err
    assert leftovers(tmp_path) == [] and sorted(p.name for p in out.iterdir()) == ["a.txt"]


def test_live_owners_temporary_is_left_alone(tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "run"
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as writer:
        try:
            from prunekit.io.atomic import _start_time

            live = _leftover(out, {"pid": writer.pid, "start_time": _start_time(writer.pid)})
            parent = _leftover(out, {"pid": os.getppid(), "start_time": _start_time(os.getppid())})
            reused = _leftover(out, {"pid": writer.pid, "start_time": "1"})  # same pid, another process
            with atomic_output_dir(out) as tmp:
                (tmp / "a.txt").write_text("new")
            assert live.exists() and parent.exists() and not reused.exists()
        finally:
            writer.kill()


def test_temporary_without_owner_record_is_removed_once_old(tmp_path):
    import os

    out = tmp_path / "run"
    fresh, old = _leftover(out, None), _leftover(out, None)
    os.utime(old, (0, 0))
    with atomic_output_dir(out):
        pass
    assert fresh.exists() and not old.exists()


def test_same_command_adopts_its_dead_temporary(tmp_path):
    from prunekit.io.atomic import CHECKPOINT_DIR, OWNER_FILE

    out = tmp_path / "run"
    pid = _dead_pid()
    other = _leftover(out, {"pid": pid, "fingerprint": "other"}, checkpoint=True)
    mine = _leftover(out, {"pid": pid, "fingerprint": "mine"}, checkpoint=True)
    with atomic_output_dir(out, fingerprint="mine") as tmp:
        assert tmp == mine and (tmp / "stages" / "big.bin").exists() and not other.exists()
        (tmp / CHECKPOINT_DIR / "state").write_text("checkpoint")
    assert sorted(p.name for p in out.iterdir()) == ["stages"], "owner record and checkpoints stay out of --out"
    assert leftovers(tmp_path) == [] and not (out / OWNER_FILE).exists()


def test_no_resume_removes_even_a_matching_temporary(tmp_path):
    out = tmp_path / "run"
    mine = _leftover(out, {"pid": _dead_pid(), "fingerprint": "mine"}, checkpoint=True)
    with atomic_output_dir(out, fingerprint="mine", resume=False) as tmp:
        assert tmp != mine and not mine.exists()


def test_ctrl_c_keeps_a_temporary_with_a_checkpoint(tmp_path):
    from prunekit.io.atomic import CHECKPOINT_DIR

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt), atomic_output_dir(out, fingerprint="f") as tmp:
        (tmp / CHECKPOINT_DIR).mkdir()
        raise KeyboardInterrupt
    assert tmp.exists()
    with atomic_output_dir(out, fingerprint="f") as again:  # same process, that call is over: adopted
        assert again == tmp
    with pytest.raises(KeyboardInterrupt), atomic_output_dir(out) as tmp:
        raise KeyboardInterrupt  # nothing worth keeping
    assert not tmp.exists()
