"""LM text handling: disjoint calibration/evaluation streams, fixed windows, perplexity."""

from __future__ import annotations

import math
import random

import pytest
import torch
from _threads import one_thread  # noqa: F401 - autouse fixture, shared
from conftest import FILL, NEG, POS
from transformers import AutoTokenizer, LlamaForCausalLM

from prunekit.errors import PrunekitError
from prunekit.tasks.lm import calibration_windows, evaluation_windows, load_lm_text, perplexity


def _overlaps(a: torch.Tensor, b: torch.Tensor, n: int = 12) -> bool:
    """Do ``a`` and ``b`` share a run of ``n`` tokens?"""
    grams = {tuple(a[i : i + n].tolist()) for i in range(len(a) - n + 1)}
    return any(tuple(b[i : i + n].tolist()) in grams for i in range(len(b) - n + 1))


def test_single_corpus_splits_into_halves_that_never_overlap(tiny_lm, tmp_path) -> None:
    """Random words, so any shared run of 12 tokens means shared text (chance: ~1e-10)."""
    tok = AutoTokenizer.from_pretrained(tiny_lm)
    rng = random.Random(0)
    paragraphs = [" ".join(rng.choices(POS + NEG + FILL, k=40)) for _ in range(40)]
    corpus = tmp_path / "random.txt"
    corpus.write_text("\n\n".join(paragraphs) + "\n")
    text = load_lm_text(tok, str(corpus))
    assert tok.eos_token_id is None  # so the stream is exactly one token per word
    assert len(text.calibration) + len(text.evaluation) == 40 * 40  # together: the whole corpus, once
    assert abs(len(text.calibration) - len(text.evaluation)) <= 1
    assert not _overlaps(text.calibration, text.evaluation)
    assert _overlaps(text.calibration, text.calibration[100:130])  # the check does see shared text
    calib = calibration_windows(text, 20, 16, seed=0)
    assert calib.shape == (20, 16)
    for row in calib:  # every calibration window lies in the first half
        starts = [i for i in range(len(text.calibration) - 15) if torch.equal(text.calibration[i : i + 16], row)]
        assert starts, "calibration window not from the calibration half"
    assert not any(_overlaps(text.calibration, w) for w in evaluation_windows(text, 16))
    assert torch.equal(calib, calibration_windows(text, 20, 16, seed=0))
    assert not torch.equal(calib, calibration_windows(text, 20, 16, seed=1))


def test_a_corpus_with_its_own_halves_uses_them(tiny_lm, tmp_path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_lm)
    (tmp_path / "calibration.txt").write_text("good good good .\n\nbad bad .\n")
    (tmp_path / "evaluation.txt").write_text("the movie was dull .\n")
    text = load_lm_text(tok, str(tmp_path))
    assert "calibration.txt" in text.split_rule
    assert tok.decode(text.evaluation).startswith("the movie was dull")


def test_evaluation_windows_are_fixed_and_evenly_spread(tiny_lm, tiny_text) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_lm)
    text = load_lm_text(tok, str(tiny_text))
    every = evaluation_windows(text, 16)
    assert len(every) == len(text.evaluation) // 16
    four = evaluation_windows(text, 16, n=4)
    assert torch.equal(four[0], every[0]) and torch.equal(four[-1], every[-1])
    sliding = evaluation_windows(text, 16, n=5, stride=8)
    assert torch.equal(sliding[1][:8], sliding[0][8:])
    with pytest.raises(PrunekitError, match="shorter than one window"):
        evaluation_windows(text, 10**6)
    with pytest.raises(PrunekitError, match="stride"):
        evaluation_windows(text, 16, stride=32)


def test_perplexity_is_exp_of_the_models_own_loss(tiny_lm, tiny_text) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_lm)
    model = LlamaForCausalLM.from_pretrained(tiny_lm).eval()
    text = load_lm_text(tok, str(tiny_text))
    windows = evaluation_windows(text, 16, n=6)
    got = perplexity(model, windows, batch_size=4)
    with torch.no_grad():
        losses = [float(model(input_ids=w[None], labels=w[None]).loss) for w in windows]
    assert got["perplexity"] == pytest.approx(math.exp(sum(losses) / len(losses)), rel=1e-5)
    assert got["tokens"] == 6 * 15
    strided = perplexity(model, evaluation_windows(text, 16, n=6, stride=8), stride=8)
    assert strided["tokens"] == 15 + 5 * 8  # the first window fully, then only the new tokens
    assert strided["perplexity"] < got["perplexity"] * 1.5
