"""Classification data handling: the packed calibration windows one-shot solvers see."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import _tokenizer

from prunekit.data import Split
from prunekit.errors import PrunekitError
from prunekit.tasks.classification import calibration_loader, encode, packed_windows


def _split(texts: list[str]) -> Split:
    return Split(texts=[(t,) for t in texts], labels=[i % 2 for i in range(len(texts))])


def test_packed_windows_hold_only_real_tokens_of_the_calibration_examples(tmp_path: Path) -> None:
    tok = _tokenizer(tmp_path)
    texts = [" ".join(["good", "movie", "the", "plot"][: 1 + i % 4] * (1 + i % 3)) for i in range(40)]
    data = encode(_split(texts), tok, max_length=16)
    ids = packed_windows(data, tok, batches=2, batch_size=8, seed=0)["input_ids"]
    longest = max(len(f["input_ids"]) for f in data.features)
    assert ids.shape[1] == longest  # as long as the longest training example: positions the model has seen
    assert (ids[:, 0] == tok.cls_token_id).all() and (ids[:, -1] == tok.sep_token_id).all()
    inner = ids[:, 1:-1]
    assert not (inner == tok.pad_token_id).any()
    assert not (inner == tok.cls_token_id).any() and not (inner == tok.sep_token_id).any()
    # exactly the text of the examples calibration walks for every criterion, in that order
    order = list(iter(calibration_loader(data, tok, 8, seed=0).sampler))[:16]
    body = [t for i in order for t in data.features[i]["input_ids"][1:-1]]
    assert inner.flatten().tolist() == body[: inner.numel()]
    assert len(body) - inner.numel() < inner.shape[1]  # only a tail shorter than a window is dropped


def test_packed_windows_of_little_text_and_of_none(tmp_path: Path) -> None:
    tok = _tokenizer(tmp_path)
    data = encode(_split(["good movie", "bad"]), tok, max_length=16)
    ids = packed_windows(data, tok, batches=1, batch_size=2)["input_ids"]  # 3 tokens of text, windows of 2: one window
    assert ids.shape == (1, 4)
    assert set(ids[0, 1:-1].tolist()) <= set(tok.convert_tokens_to_ids(["good", "movie", "bad"]))
    with pytest.raises(PrunekitError, match="empty"):
        packed_windows(encode(_split(["", ""]), tok, max_length=16), tok, batches=1, batch_size=2)


def test_packed_windows_of_a_tokenizer_without_cls_and_sep(tiny_gpt2_classifier: Path) -> None:
    """GPT-2 puts no special tokens around a text: the windows are the examples' tokens, framed by nothing."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_gpt2_classifier)
    data = encode(_split(["good movie", "bad plot was dull", "fun"] * 4), tok, max_length=16)
    windows = packed_windows(data, tok, batches=2, batch_size=4)
    assert set(windows) == {"input_ids"}  # no token types: the model has none
    ids = windows["input_ids"]
    assert ids.shape[1] == 4  # the longest example, nothing added
    order = list(iter(calibration_loader(data, tok, 4, seed=0).sampler))[:8]
    body = [t for i in order for t in data.features[i]["input_ids"]]
    assert ids.flatten().tolist() == body[: ids.numel()]


def test_packed_windows_of_sentence_pairs_keep_their_token_types(tmp_path: Path) -> None:
    """Pairs: every packed token keeps the token type it had in its example (the second text's are 1),
    [CLS] is type 0 and a window's closing [SEP] takes the type of the token before it, as in an example."""
    tok = _tokenizer(tmp_path)
    pairs = [("good movie", "bad plot was dull"), ("fun", "the story"), ("the acting was fine", "ugly")] * 4
    data = encode(Split(texts=pairs, labels=[i % 2 for i in range(len(pairs))]), tok, max_length=16)
    windows = packed_windows(data, tok, batches=2, batch_size=4)
    ids, types = windows["input_ids"], windows["token_type_ids"]
    assert types.shape == ids.shape and set(types.flatten().tolist()) == {0, 1}
    order = list(iter(calibration_loader(data, tok, 4, seed=0).sampler))[:8]
    body = [t for i in order for t in data.features[i]["token_type_ids"][1:-1]]
    inner = types[:, 1:-1]
    assert inner.flatten().tolist() == body[: inner.numel()]
    assert (types[:, 0] == 0).all() and torch.equal(types[:, -1], inner[:, -1])
