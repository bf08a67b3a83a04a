"""read_yaml: a recipe or plan that is not UTF-8 or not YAML fails with one line that says where."""

from __future__ import annotations

from pathlib import Path

import pytest

from prunekit.errors import PrunekitError
from prunekit.io.documents import read_yaml


@pytest.mark.parametrize(("raw", "message"), [
    (b"model: m\nstages: [\x80]\n", r"r.yaml is not UTF-8 text \(byte 0x80 at offset 18\): save it as UTF-8"),
    (b"model: m\nstages: {a\n", r"not valid YAML: line 3, column 1: expected ',' or '}', but got '<stream end>'"),
    (b"\x00", r"not valid YAML: unacceptable character #x0000"),
])
def test_unreadable_documents_fail_in_one_line(tmp_path: Path, raw: bytes, message: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_bytes(raw)
    with pytest.raises(PrunekitError, match=message) as err:
        read_yaml(path, "recipe")
    assert "\n" not in str(err.value)
