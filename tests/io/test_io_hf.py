"""Loading Hugging Face classifier folders (prunekit/io/hf.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _plain import assert_reproduces
from conftest import tiny_rows
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertForQuestionAnswering,
    BertForTokenClassification,
    GPT2ForSequenceClassification,
)

from prunekit.config import DataOptions
from prunekit.errors import PrunekitError
from prunekit.io.hf import check_task, load_causal_lm, load_classifier, locate
from prunekit.pipeline import evaluate


def _without_padding(folder: Path, out: Path, eos: bool = True) -> Path:
    """The GPT-2 classifier as decoders usually ship: no pad token in the tokenizer nor in the config."""
    model = GPT2ForSequenceClassification.from_pretrained(folder)
    model.config.pad_token_id = None
    model.save_pretrained(out)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.pad_token = None
    if not eos:
        tok.eos_token = None
    tok.save_pretrained(out)
    return out


def test_a_decoder_classifier_without_a_pad_token_pads_with_end_of_text(tiny_gpt2_classifier, tmp_path):
    folder = _without_padding(tiny_gpt2_classifier, tmp_path / "nopad")
    assert AutoTokenizer.from_pretrained(folder).pad_token_id is None
    model, tok, head_is_new = load_classifier(str(folder))
    assert not head_is_new
    assert tok.pad_token == tok.eos_token and model.config.pad_token_id == tok.eos_token_id
    rows = tiny_rows()
    rows["text"] = [" ".join(t.split()[: 2 + i % 5]) for i, t in enumerate(rows.text)]  # 2 to 6 words: padding
    rows.to_csv(tmp_path / "uneven.csv", index=False)
    data = DataOptions(str(tmp_path / "uneven.csv"))
    metrics = evaluate(str(folder), data)  # batches of many examples, padded
    assert_reproduces(folder, data, metrics)  # = one unpadded text at a time
    assert json.loads((folder / "config.json").read_text()).get("pad_token_id") is None  # the input is untouched


def test_a_tokenizer_without_pad_or_end_of_text_is_a_clear_error(tiny_gpt2_classifier, tmp_path):
    folder = _without_padding(tiny_gpt2_classifier, tmp_path / "nopad", eos=False)
    with pytest.raises(PrunekitError, match="neither a padding nor an end-of-text token"):
        load_classifier(str(folder))


# --- a head for another task is refused, by name, instead of silently replaced ---------------------------

CLASSIFIER_STARTS = ["BertForSequenceClassification", "BertModel", None, "BertForMaskedLM", "BertForPreTraining",
                     "GPT2LMHeadModel", "LlamaForCausalLM"]
NOT_A_CLASSIFIER = [("BertForTokenClassification", "token classification"),
                    ("BertForQuestionAnswering", "question answering"),
                    ("XLNetForQuestionAnsweringSimple", "question answering"),
                    ("BertForMultipleChoice", "multiple choice"),
                    ("T5ForConditionalGeneration", "sequence-to-sequence generation")]
NOT_AN_LM = [("BertForSequenceClassification", "sequence classification"),
             ("BertForTokenClassification", "token classification"), ("BertForMaskedLM", "masked LM"),
             ("BertModel", "no LM head"), (None, "no LM head")]


def _config_of(arch: str | None) -> BertConfig:
    return BertConfig(architectures=[arch] if arch else None)


@pytest.mark.parametrize("arch", CLASSIFIER_STARTS)
def test_classification_starts_from_its_own_head_or_a_body(arch):
    check_task("m", _config_of(arch), "classification")  # no error


@pytest.mark.parametrize(("arch", "task"), NOT_A_CLASSIFIER)
def test_another_tasks_head_is_refused_for_classification(arch, task):
    with pytest.raises(PrunekitError, match=rf"'m' is a {arch} \({task}\); prunekit supports sequence "
                                            r"classification and causal LMs \(--task lm\) for now"):
        check_task("m", _config_of(arch), "classification")


@pytest.mark.parametrize("arch", ["GPT2LMHeadModel", "LlamaForCausalLM"])
def test_an_lm_starts_from_a_causal_lm_head(arch):
    check_task("m", _config_of(arch), "lm")


@pytest.mark.parametrize(("arch", "what"), NOT_AN_LM)
def test_anything_but_a_causal_lm_is_refused_for_lm(arch, what):
    with pytest.raises(PrunekitError, match=rf"is a {arch or 'bert'} \({what}\); --task lm needs"):
        check_task("m", _config_of(arch), "lm")


@pytest.mark.parametrize(("cls", "task"), [(BertForTokenClassification, "token classification"),
                                           (BertForQuestionAnswering, "question answering")])
def test_a_token_or_qa_folder_is_not_turned_into_a_sequence_classifier(tiny_bert_with_head, cls, task):
    """Before: a fresh sequence-classification head replaced the trained one, without a word."""
    folder = tiny_bert_with_head(cls)
    with pytest.raises(PrunekitError, match=rf"is a {cls.__name__} \({task}\)"):
        load_classifier(str(folder), ["negative", "positive"])
    with pytest.raises(PrunekitError, match=rf"is a {cls.__name__} \({task}\); --task lm needs"):
        load_causal_lm(str(folder))


def test_a_masked_lm_checkpoint_is_a_bare_encoder(tiny_bert_with_head):
    folder = tiny_bert_with_head(BertForMaskedLM)
    model, _, head_is_new = load_classifier(str(folder), ["negative", "positive"])
    assert head_is_new and model.config.id2label == {0: "negative", 1: "positive"}


def test_a_model_path_that_is_a_file_names_the_folder(tiny_classifier):
    with pytest.raises(PrunekitError, match=rf"'{tiny_classifier}/config.json' is a file; give the model folder "
                                            rf"\({tiny_classifier}\)$"):
        locate(str(tiny_classifier / "config.json"))


def test_a_model_name_too_long_for_the_filesystem_is_one_line():
    from prunekit.io.hf import locate

    with pytest.raises(PrunekitError, match="not a usable path"):
        locate("x" * 5000)
