"""Token-classification data: the CoNLL / JSONL / datasets readers, BIO repair and sub-token alignment."""

from __future__ import annotations

import json

import pytest

from prunekit.data.tokens import IGNORE, align_labels, load_tokens, repair_bio
from prunekit.errors import PrunekitError

CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
"""


def _conll_folder(tmp_path):
    for name in ("train", "valid", "test"):
        (tmp_path / f"{name}.txt").write_text(CONLL)
    return tmp_path


def test_conll_folder_reads_sentences_splits_and_tags(tmp_path):
    data = load_tokens(str(_conll_folder(tmp_path)))
    assert data.train.tokens == [["EU", "rejects", "German"], ["Peter", "Blackburn"]]
    assert data.label_names == ["O", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    names = [[data.label_names[i] for i in s] for s in data.validation.labels]
    assert names == [["B-ORG", "O", "B-MISC"], ["B-PER", "I-PER"]]


def test_jsonl_with_string_tags_is_split_80_10_10(tmp_path):
    path = tmp_path / "ner.jsonl"
    path.write_text("\n".join(json.dumps({"tokens": ["a", "b"], "tags": ["B-X", "I-X"]}) for _ in range(20)))
    data = load_tokens(str(path))
    assert (len(data.train), len(data.validation), len(data.test)) == (16, 2, 2)


def test_datasets_folder_with_tag_ids_and_classlabel_names(tmp_path):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                                  "ner_tags": datasets.Sequence(datasets.ClassLabel(names=["O", "B-LOC", "I-LOC"]))})
    ds = datasets.Dataset.from_dict({"tokens": [["New", "York", "!"]] * 10, "ner_tags": [[1, 2, 0]] * 10},
                                    features=features)
    ds.save_to_disk(str(tmp_path / "saved"))
    data = load_tokens(str(tmp_path / "saved"))
    assert [data.label_names[i] for i in data.train.labels[0]] == ["B-LOC", "I-LOC", "O"]


def test_iob1_starts_are_repaired_with_a_counting_warning():
    with pytest.warns(UserWarning, match="repaired 2 I- tags"):
        assert repair_bio([["I-PER", "I-PER", "O", "I-LOC"]], "x") == [["B-PER", "I-PER", "O", "B-LOC"]]


@pytest.mark.parametrize("tag", ["PER", "X-PER", "B-"])
def test_tags_not_in_bio_form_are_refused(tag):
    with pytest.raises(PrunekitError, match="not in BIO form"):
        repair_bio([["O", tag]], "x")


def test_length_mismatch_names_the_row(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"tokens": ["a"], "tags": ["O"]}) + "\n" + json.dumps({"tokens": ["a", "b"],
                                                                                      "tags": ["O"]}))
    with pytest.raises(PrunekitError, match="row 2 .* 2 tokens but 1 tags"):
        load_tokens(str(path))


def test_a_label_column_that_is_not_a_tag_sequence_is_refused(tmp_path):
    path = tmp_path / "cls.jsonl"
    path.write_text("\n".join(json.dumps({"tokens": ["a"], "label": "pos"}) for _ in range(3)))
    with pytest.raises(PrunekitError, match="must hold a tag sequence"):
        load_tokens(str(path))


def test_labels_go_on_the_first_sub_token_only():
    # [CLS] Black ##burn lives [SEP]
    assert align_labels([None, 0, 0, 1, None], [5, 0]) == [IGNORE, 5, IGNORE, 0, IGNORE]


def test_the_conll2003_asset_reads_as_its_three_splits():
    from prunekit.assets import ASSETS, cache_dir

    if not (cache_dir() / "assets" / "conll2003" / "train.txt").is_file():
        pytest.skip("conll2003 asset not built (prunekit assets --only conll2003)")
    data = load_tokens("conll2003")
    assert (len(data.train), len(data.validation), len(data.test)) == (14041, 3250, 3453)
    assert data.label_names == ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert "conll2003" in ASSETS
