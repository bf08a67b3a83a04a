"""Shared fixtures: a tiny but real BERT classifier and a tiny learnable sentiment dataset, all offline."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizer

POS = ["good", "great", "fine", "superb", "lovely", "fun", "bright", "warm"]
NEG = ["bad", "awful", "dull", "poor", "boring", "ugly", "grim", "cold"]
FILL = ["the", "movie", "was", "a", "plot", "story", "acting", "really", "very", "quite"]


def tiny_rows(n: int = 240, seed: int = 0) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "positive" if i % 2 else "negative"
        words = rng.sample(FILL, 4) + rng.sample(POS if label == "positive" else NEG, 2)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return pd.DataFrame(rows)


def _tokenizer(folder: Path) -> BertTokenizer:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *POS, *NEG, *FILL, "neutral", "meh"]
    return BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)


def _config(vocab_size: int) -> BertConfig:
    return BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=64)


@pytest.fixture()
def tiny_csv(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.csv"
    tiny_rows().to_csv(path, index=False)
    return path


@pytest.fixture()
def tiny_encoder(tmp_path: Path) -> Path:
    """A bare BERT encoder folder (no classification head), like all-MiniLM-L6-v2 but tiny."""
    folder = tmp_path / "tiny-encoder"
    folder.mkdir()
    tok = _tokenizer(folder)
    torch.manual_seed(0)
    BertModel(_config(tok.vocab_size)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture()
def tiny_classifier(tmp_path: Path) -> Path:
    """A BERT classifier folder with labels negative/positive (untrained weights)."""
    folder = tmp_path / "tiny-classifier"
    folder.mkdir()
    tok = _tokenizer(folder)
    cfg = _config(tok.vocab_size)
    cfg.id2label = {0: "negative", 1: "positive"}
    cfg.label2id = {"negative": 0, "positive": 1}
    torch.manual_seed(0)
    BertForSequenceClassification(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture()
def tiny_model() -> BertForSequenceClassification:
    torch.manual_seed(0)
    return BertForSequenceClassification(_config(40)).eval()


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory) -> tuple[Path, Path]:
    """(classifier folder, csv) — the tiny classifier fine-tuned once by prunekit itself."""
    from prunekit.config import DataOptions, TrainOptions
    from prunekit.pipeline import finetune

    root = tmp_path_factory.mktemp("trained")
    csv = root / "tiny.csv"
    tiny_rows().to_csv(csv, index=False)
    enc = root / "enc"
    enc.mkdir()
    tok = _tokenizer(enc)
    torch.manual_seed(0)
    BertModel(_config(tok.vocab_size)).save_pretrained(enc)
    tok.save_pretrained(enc)
    out = root / "clf"
    finetune(str(enc), DataOptions(str(csv)), out, TrainOptions(epochs=6, lr=2e-3, batch_size=16), latency=False)
    return out, csv


def lm_text(n_sentences: int = 400, seed: int = 0) -> str:
    """Paragraphs of the tiny vocabulary with some structure, so an LM's perplexity means something."""
    rng = random.Random(seed)
    paras = []
    for _ in range(n_sentences // 8):
        sents = []
        for _ in range(8):
            pool = POS if rng.random() < 0.5 else NEG
            sents.append(" ".join(["the", "movie", "was", rng.choice(["very", "really", "quite"]), rng.choice(pool)]))
        paras.append(" . ".join(sents) + " .")
    return "\n\n".join(paras) + "\n"


@pytest.fixture()
def tiny_lm(tmp_path: Path) -> Path:
    """A LLaMA-style causal LM folder (GQA: 4 query heads share 2 kv heads, tied head), random weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path / "tiny-lm"
    folder.mkdir()
    tok = _tokenizer(folder)
    cfg = LlamaConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=48, tie_word_embeddings=True,
                      max_position_embeddings=128, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture()
def tiny_text(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(lm_text())
    return path
