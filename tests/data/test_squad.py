"""SQuAD-format reading: nested JSON, JSONL with texts only (offsets recovered), missing columns named, answers
not found counted in the notes (train: skipped, evaluation: kept)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prunekit.data.squad import find_answer, load_squad
from prunekit.errors import PrunekitError


def test_find_answer_first_exact_then_case_insensitive() -> None:
    ctx = "Paris is big. paris is old. PARIS."
    assert find_answer(ctx, "paris") == 14  # the exact occurrence wins over the earlier case-insensitive one
    assert find_answer(ctx, "Paris is") == 0
    assert find_answer(ctx, "paris IS OLD") == 14
    assert find_answer(ctx, "London") == -1


def _rows(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_jsonl_texts_only_offsets_recovered_and_misses_counted(tmp_path: Path) -> None:
    ok = {"context": "The cat sat on the mat.", "question": "Where?", "answers": ["the Mat"]}
    miss = {"context": "Dogs bark.", "question": "Who?", "answers": ["cats"]}
    for split in ("train", "validation", "test"):
        _rows(tmp_path / f"{split}.jsonl", [ok, miss])
    data = load_squad(str(tmp_path))
    assert len(data.train) == 1 and data.train.examples[0].answers == [("the Mat", 15)]
    assert len(data.validation) == 2 and data.validation.examples[1].answers == [("cats", -1)]
    assert any("train: 1 of 2 questions skipped" in n for n in data.notes)
    assert any("validation: 1 of 2" in n for n in data.notes)


def test_nested_squad_json_keeps_given_offsets_and_fixes_wrong_ones(tmp_path: Path) -> None:
    ctx = "a b a b"
    obj = {"data": [{"title": "t", "paragraphs": [{"context": ctx, "qas": [
        {"id": "q1", "question": "?", "answers": [{"text": "a b", "answer_start": 4}]},
        {"id": "q2", "question": "?", "answers": [{"text": "b", "answer_start": 0}]}]}]}]}
    (tmp_path / "train.json").write_text(json.dumps(obj))
    (tmp_path / "dev.json").write_text(json.dumps(obj))
    (tmp_path / "test.json").write_text(json.dumps(obj))
    data = load_squad(str(tmp_path))
    assert [e.answers for e in data.train.examples] == [[("a b", 4)], [("b", 2)]]
    assert len(data.validation) == 2


def test_missing_context_column_is_named(tmp_path: Path) -> None:
    _rows(tmp_path / "train.jsonl", [{"passage_text": "x", "question": "?", "answers": ["x"]}])
    with pytest.raises(PrunekitError, match="no context column"):
        load_squad(str(tmp_path / "train.jsonl"))


def test_builtin_squad_asset() -> None:
    data = load_squad("squad")
    assert (len(data.train), len(data.validation), len(data.test)) == (753, 120, 127)
