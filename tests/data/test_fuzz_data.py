"""Property-based fuzzing of data loading (prunekit.data.classification): random bytes, random rows and column
names (missing, duplicated), CSV/TSV with any delimiter under either name, JSONL with values of every JSON type,
empty and non-UTF-8 files, folders of splits, and the split/label helpers. Each load either succeeds with
well-formed splits or fails with a PrunekitError of one line — never another exception."""

from __future__ import annotations

import csv
import gzip
import io
import json
import warnings
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prunekit.data import Split, load_classification, stratified_split
from prunekit.errors import PrunekitError

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

NAMES = ["text", "label", "labels", "sentence", "sentence1", "sentence2", "review", "", " text", "a\nb"]
column = st.sampled_from(NAMES) | st.text(max_size=4)
columns = st.lists(column, max_size=4)
cell = (st.sampled_from(["", " ", "NA", "null", "0", "1", "pos", "neg", "a,b", 'q"t', "x\ty", "l1\nl2"])
        | st.text(max_size=8) | st.integers(-2, 3) | st.floats(allow_nan=True) | st.none())
json_value = st.recursive(cell | st.booleans() | st.integers(), lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=5)
rows = st.lists(st.lists(cell, max_size=5), max_size=30)
labelled = st.lists(st.tuples(st.sampled_from(["good film", "bad", "a, b", "x;y", "p|q", "t\tu", "", "NA"]) | cell,
                              st.sampled_from(["pos", "neg", "mid", 0, 1, 1.0, None, ""]) | cell),
                    min_size=0, max_size=40).filter(lambda pairs: len(pairs) >= 3 or not pairs)
headers = st.sampled_from([["text", "label"], ["sentence1", "sentence2", "label"], ["label", "text", "id"],
                           ["text", "label", "text"], ["text", "labels", "label"], ["sentence", "label", "", ""]])


def _delimited(header: list[str], body: list[list[Any]], delimiter: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter)
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in body])
    return out.getvalue()


def _jsonl(header: list[str], body: list[list[Any]], data: st.DataObject) -> str:
    """One object per line, written by hand so keys may repeat; some lines hold other JSON values."""
    lines = []
    for row in body:
        if data.draw(st.integers(0, 4)) == 0:
            lines.append(json.dumps(data.draw(json_value)))
            continue
        values = [data.draw(json_value) if data.draw(st.booleans()) else v for v in row]
        pairs = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in zip(header, values, strict=False)]
        lines.append("{" + ", ".join(pairs) + "}")
    return "\n".join(lines) + ("\n" if data.draw(st.booleans()) else "")


SUFFIXES = {"delimited": [".csv", ".csv", ".tsv", ".csv.gz"], "jsonl": [".jsonl", ".jsonl", ".json"],
            "json": [".json"], "bytes": [".csv", ".tsv", ".jsonl", ".json", ".csv.gz"]}


@st.composite
def data_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """(suffix, content) of a random data file; the suffix mostly fits the content, sometimes not."""
    kind = draw(st.sampled_from(["delimited", "jsonl", "json", "bytes", "labelled", "labelled", "labelled"]))
    header, body = draw(columns), draw(rows)
    if kind == "labelled":  # well-formed enough to load often, so the split and label code is reached
        header = draw(headers)
        body = [[t, y, t, y][: len(header)] if header[0] != "label" else [y, t, 7] for t, y in draw(labelled)]
        kind = draw(st.sampled_from(["delimited", "jsonl"]))
    suffix = draw(st.sampled_from(SUFFIXES[kind]) if draw(st.integers(0, 7)) else st.sampled_from(SUFFIXES["bytes"]))
    if kind == "bytes":
        return suffix, draw(st.binary(max_size=300))
    if kind == "delimited":
        tab = suffix == ".tsv" and draw(st.integers(0, 3))
        text = _delimited(header, body, "\t" if tab else draw(st.sampled_from([",", "\t", ";", "|"])))
    elif kind == "jsonl":
        text = _jsonl(header, body, draw(st.data()))
    else:
        text = json.dumps(draw(json_value | st.lists(st.dictionaries(column, json_value, max_size=4), max_size=6)))
    encoding = draw(st.sampled_from(["utf-8"] * 6 + ["latin-1", "utf-16"]))
    raw = text.encode(encoding, errors="replace")
    return suffix, gzip.compress(raw, mtime=0) if suffix.endswith(".gz") else raw


@st.composite
def labelled_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """(suffix, content) of a mostly valid labelled file, with at most a few random cells: these load often,
    so the split and label handling is fuzzed too."""
    header = draw(headers)
    words = st.sampled_from(["good film", "bad", "a, b", "x;y", "p|q", 'say "hi"', "NA", "ok"])
    texts = draw(st.lists(words | cell if draw(st.booleans()) else words, min_size=3, max_size=40))
    labels = draw(st.lists(st.sampled_from(["pos", "neg", "mid", 0, 1, 2]), min_size=len(texts), max_size=len(texts)))
    body = [[t, y, t, y][: len(header)] if header[0] != "label" else [y, t, 7]
            for t, y in zip(texts, labels, strict=True)]
    for _ in range(draw(st.integers(0, 2))):  # a few cells replaced by any JSON value
        row = draw(st.sampled_from(body))
        row[draw(st.integers(0, len(row) - 1))] = draw(json_value)
    suffix = draw(st.sampled_from([".csv", ".tsv", ".jsonl", ".json", ".csv.gz"]))
    if suffix == ".jsonl":  # now and then a line that is some other JSON value
        lines = [json.dumps(dict(zip(header, row, strict=False))) for row in body]
        if draw(st.booleans()):
            other = json_value.filter(lambda v: not isinstance(v, dict))
            lines.insert(draw(st.integers(0, len(lines))), json.dumps(draw(other)))
        text = "".join(line + "\n" for line in lines)
    elif suffix == ".json":
        text = json.dumps([dict(zip(header, row, strict=False)) for row in body])
    else:
        sep = "\t" if suffix == ".tsv" else draw(st.sampled_from([",", "\t", ";", "|"]))
        text = _delimited(header, [[json.dumps(v) if isinstance(v, list | dict) else v for v in r] for r in body], sep)
    raw = text.encode()
    return suffix, gzip.compress(raw, mtime=0) if suffix.endswith(".gz") else raw


def _check_loaded(path: Path, **kwargs: Any) -> None:
    """Load ``path``: either well-formed data or a one-line PrunekitError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = load_classification(str(path), **kwargs)
    except PrunekitError as err:
        assert str(err).strip() and "\n" not in str(err), repr(str(err))
        return
    assert len(data.label_names) >= 2 and len(set(data.label_names)) == len(data.label_names)
    for split in data.splits.values():
        assert all(0 <= y < data.num_labels for y in split.labels)
        assert all(len(t) == len(data.text_columns) and all(isinstance(x, str) for x in t) for t in split.texts)
    assert len(data.train) > 0


@FUZZ
@given(file=data_files() | labelled_files(), text_columns=st.none() | st.none() | st.lists(column, max_size=3),
       label_column=st.none() | st.none() | column)
def test_random_files_load_or_fail_in_one_line(tmp_path: Path, file: tuple[str, bytes], text_columns, label_column):
    suffix, raw = file
    path = tmp_path / f"data{suffix}"
    path.write_bytes(raw)
    _check_loaded(path, text_columns=text_columns, label_column=label_column)


@settings(FUZZ, max_examples=60)
@given(files=st.dictionaries(st.sampled_from(["train", "validation", "dev", "test"]), labelled_files() | data_files(),
                             max_size=3))
def test_random_folders_of_splits(tmp_path_factory, files: dict[str, tuple[str, bytes]]) -> None:
    folder = tmp_path_factory.mktemp("splits")
    for split, (suffix, raw) in files.items():
        (folder / f"{split}{suffix}").write_bytes(raw)
    _check_loaded(folder)


@FUZZ
@given(labels=st.lists(st.integers(0, 4), max_size=60), n=st.integers(-2, 70), seed=st.integers(0, 3),
       names=st.lists(st.sampled_from(["0", "1", "2", "3", "4", "x"]), max_size=6))
def test_split_and_label_helpers(labels: list[int], n: int, seed: int, names: list[str]) -> None:
    split = Split([(str(i),) for i in range(len(labels))], labels)
    try:
        got = split.subset(n, seed)
        assert len(got) == min(n, len(labels)) and set(got.labels) <= set(labels)
    except PrunekitError as err:
        assert n <= 0 and "\n" not in str(err)
    try:
        parts = stratified_split(labels, seed)
        assert sorted(i for idx in parts.values() for i in idx) == list(range(len(labels)))
    except PrunekitError as err:
        assert len(labels) < 3 and "\n" not in str(err)
