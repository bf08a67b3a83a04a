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
def tiny_bert_with_head(tmp_path: Path):
    """Builds tiny BERT folders with any transformers class (BertForTokenClassification, a 3-label
    BertForSequenceClassification, ...): ``make(cls, **config_overrides) -> folder``, saved as transformers does."""

    def make(cls: type, name: str | None = None, **overrides: object) -> Path:
        folder = tmp_path / (name or cls.__name__)
        folder.mkdir()
        tok = _tokenizer(folder)
        cfg = _config(tok.vocab_size)
        for key, value in overrides.items():
            setattr(cfg, key, value)
        torch.manual_seed(0)
        cls(cfg).save_pretrained(folder)
        tok.save_pretrained(folder)
        return folder

    return make


@pytest.fixture()
def tiny_gpt2_classifier(tmp_path: Path) -> Path:
    """A GPT-2 classifier folder (Conv1D Linears, weights stored transposed) with labels negative/positive
    (untrained weights) and a GPT-2-like tokenizer: no special tokens around a text, end-of-text pads.
    The MLP is 160 wide, so mlp.c_proj's inputs span two of SparseGPT's 128-column blocks."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2ForSequenceClassification, PreTrainedTokenizerFast

    folder = tmp_path / "tiny-gpt2-classifier"
    folder.mkdir()
    words = ["<|endoftext|>", "<unk>", *POS, *NEG, *FILL, "neutral", "meh"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<|endoftext|>",
                                  pad_token="<|endoftext|>", model_input_names=["input_ids", "attention_mask"])
    cfg = GPT2Config(vocab_size=len(words), n_embd=32, n_layer=2, n_head=2, n_inner=160, n_positions=64,
                     bos_token_id=0, eos_token_id=0, pad_token_id=0, id2label={0: "negative", 1: "positive"},
                     label2id={"negative": 0, "positive": 1})
    torch.manual_seed(0)
    GPT2ForSequenceClassification(cfg).save_pretrained(folder)
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
