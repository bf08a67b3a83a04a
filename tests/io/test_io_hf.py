"""Loading Hugging Face classifier folders (prunekit/io/hf.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer, GPT2ForSequenceClassification

from prunekit.config import DataOptions
from prunekit.errors import PrunekitError
from prunekit.io.hf import load_classifier
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


def test_a_decoder_classifier_without_a_pad_token_pads_with_end_of_text(tiny_gpt2_classifier, tiny_csv, tmp_path):
    folder = _without_padding(tiny_gpt2_classifier, tmp_path / "nopad")
    assert AutoTokenizer.from_pretrained(folder).pad_token_id is None
    model, tok, head_is_new = load_classifier(str(folder))
    assert not head_is_new
    assert tok.pad_token == tok.eos_token and model.config.pad_token_id == tok.eos_token_id
    metrics = evaluate(str(folder), DataOptions(str(tiny_csv)))  # batches of many examples
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert json.loads((folder / "config.json").read_text()).get("pad_token_id") is None  # the input is untouched


def test_a_tokenizer_without_pad_or_end_of_text_is_a_clear_error(tiny_gpt2_classifier, tmp_path):
    folder = _without_padding(tiny_gpt2_classifier, tmp_path / "nopad", eos=False)
    with pytest.raises(PrunekitError, match="neither a padding nor an end-of-text token"):
        load_classifier(str(folder))
