import json

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
