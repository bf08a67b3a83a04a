"""Vocabulary pruning on the real MiniLM (WordPiece) and SmolLM2 (byte-level BPE) tokenizers, with tiny models.

The tokenizers are the real ones because vocabulary pruning is all about their quirks; the models are
tiny random ones of the same vocabulary size so the tests stay fast. Assets are fetched when missing.
"""

from __future__ import annotations

import json
from pathlib import Path

import _structured_zoo as zoo  # tests/ is on pytest's pythonpath
import pytest
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertModel,
    BertTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
)
from transformers.tokenization_utils_tokenizers import TokenizersBackend

from prunekit import assets
from prunekit.errors import PrunekitError
from prunekit.io.shapes import save_pruned
from prunekit.prune import check_vocab_mapping, corpus_token_ids, prune_vocab

ODD = ["Ünïcödé naïve café — 日本語の映画 🙂🎬", "zxqvbnm qwrtpsdf", "tabs\tand\nnewlines  ", "<|im_start|>user hi",
       "x" * 150]


one_thread = zoo.one_thread  # autouse fixture


def _asset(name: str) -> Path:
    """The built asset, fetched and built first if missing (`make assets` does it ahead); a skip only when
    PyPI cannot be reached, as in tests/test_e2e_minilm.py."""
    try:
        return assets.ensure(name)
    except PrunekitError as err:
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def reviews() -> tuple[list[str], list[str]]:
    """300 held-in training snippets and 40 held-out test snippets plus odd text."""
    folder = _asset("movie-reviews")
    read = lambda split: [json.loads(line)["text"] for line in (folder / f"{split}.jsonl").open()]  # noqa: E731
    return read("train")[:300], read("test")[:40] + ODD


def _remap(old_to_new: dict[int, int], ids: torch.Tensor) -> torch.Tensor:
    return ids.apply_(old_to_new.__getitem__)


def _same_ids(old_tok, new_tok, old_to_new: dict[int, int], texts: list[str]) -> None:
    for text in texts:
        assert new_tok(text).input_ids == [old_to_new[i] for i in old_tok(text).input_ids], text


def _same_rows(before: torch.Tensor, after: torch.Tensor, old_to_new: dict[int, int]) -> None:
    """Every kept token's embedding row moved to its new id unchanged."""
    old, new = zip(*sorted(old_to_new.items()), strict=True)
    assert torch.equal(after[list(new)], before[list(old)])


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------------------------
# MiniLM: WordPiece
# ----------------------------------------------------------------------------------------------


def _bert(kind: str, vocab: int) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=256, num_labels=2, initializer_range=0.5)
    if kind == "classifier":
        return BertForSequenceClassification(cfg).eval()
    cfg.tie_word_embeddings = False  # an untied LM head with a bias
    model = BertForMaskedLM(cfg).eval()
    torch.nn.init.normal_(model.get_output_embeddings().bias)
    return model


@pytest.mark.parametrize("kind", ["classifier", "mlm"])
def test_minilm_vocab_shrinks_with_identical_ids_and_outputs(kind, reviews, tmp_path):
    held_in, held_out = reviews
    tok = AutoTokenizer.from_pretrained(_asset("all-MiniLM-L6-v2"))
    model = _bert(kind, len(tok))
    model.config.eos_token_id = tok.sep_token_id  # a config id that moves: [SEP] is 102 before pruning
    batch = tok(held_in[:16], padding=True, return_tensors="pt")
    with torch.no_grad():
        before = model(**batch).logits
    rows = model.get_input_embeddings().weight.detach().clone()

    keep = corpus_token_ids(tok, held_in, batch_size=64)
    model, new_tok, old_to_new = prune_vocab(model, tok, keep)

    assert len(tok) == 30522 and len(new_tok) == len(keep) < 0.2 * len(tok)  # 2,571 on these 300 snippets
    assert model.config.vocab_size == len(new_tok) == model.get_input_embeddings().weight.shape[0]
    assert sorted(old_to_new.values()) == list(range(len(new_tok)))
    assert model.config.eos_token_id == new_tok.sep_token_id == old_to_new[102] != 102
    assert model.config.pad_token_id == new_tok.pad_token_id == old_to_new[tok.pad_token_id]
    assert isinstance(new_tok, BertTokenizer) and new_tok.is_fast
    _same_rows(rows, model.get_input_embeddings().weight, old_to_new)
    _same_ids(tok, new_tok, old_to_new, held_in)
    assert check_vocab_mapping(tok, new_tok, old_to_new, held_in) == len(held_in)

    new_batch = new_tok(held_in[:16], padding=True, return_tensors="pt")
    assert torch.equal(new_batch["input_ids"], _remap(old_to_new, batch["input_ids"].clone()))
    with torch.no_grad():
        after = model(**new_batch).logits
    order = sorted(old_to_new, key=old_to_new.__getitem__)
    assert torch.equal(after, before if kind == "classifier" else before[..., order])
    if kind == "mlm":
        assert model.get_output_embeddings().weight is not model.get_input_embeddings().weight
        # transformers 5 keeps a separate (unused) cls.predictions.bias when untied: it shrinks too
        assert model.cls.predictions.decoder.bias.shape == model.cls.predictions.bias.shape == (len(new_tok),)

    # held-out text: valid ids, unknown words become [UNK] instead of failing
    for text in held_out:
        ids = new_tok(text).input_ids
        assert ids and max(ids) < len(new_tok)
    assert new_tok.unk_token_id in new_tok(ODD[1]).input_ids

    # a vanilla folder: plain from_pretrained of model and tokenizer reproduces both
    manifest = save_pruned(model, new_tok, tmp_path / "out")
    assert manifest["vanilla_from_pretrained"]
    assert not (tmp_path / "out" / "vocab.txt").exists()  # never the stale 30,522-token vocab.txt
    auto = AutoModelForSequenceClassification if kind == "classifier" else AutoModelForMaskedLM
    model2 = auto.from_pretrained(tmp_path / "out").eval()
    tok2 = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert len(tok2) == len(new_tok)
    for text in held_in + held_out:
        assert tok2(text).input_ids == new_tok(text).input_ids, text
    with torch.no_grad():
        assert torch.equal(model2(**tok2(held_in[:16], padding=True, return_tensors="pt")).logits, after)


# ----------------------------------------------------------------------------------------------
# SmolLM2: byte-level BPE, tied LM head
# ----------------------------------------------------------------------------------------------


def _llama(vocab: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=8, intermediate_size=48, tie_word_embeddings=True,
                      bos_token_id=1, eos_token_id=2, pad_token_id=2, initializer_range=0.5)
    return LlamaForCausalLM(cfg).eval()


def test_smollm2_tied_lm_vocab_shrinks_with_identical_ids_and_logits(reviews, tmp_path):
    held_in, held_out = reviews
    tok = AutoTokenizer.from_pretrained(_asset("smollm2-135m"))
    model = _llama(len(tok))
    model.generation_config.eos_token_id = [2, 0]
    texts = held_in[:4]  # 4 x 49,152 logits per position is plenty
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        before = model(**batch).logits
    rows = model.get_input_embeddings().weight.detach().clone()

    keep = corpus_token_ids(tok, held_in)
    model, new_tok, old_to_new = prune_vocab(model, tok, keep)

    assert len(tok) == 49152 and len(new_tok) == len(keep) < 0.2 * len(tok)  # 4,534 on these 300 snippets
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied
    _same_rows(rows, model.lm_head.weight, old_to_new)
    assert model.lm_head.out_features == model.config.vocab_size == model.vocab_size == len(new_tok)
    assert (model.config.bos_token_id, model.config.eos_token_id) == (new_tok.bos_token_id, new_tok.eos_token_id)
    assert model.generation_config.eos_token_id == [old_to_new[2], old_to_new[0]]
    _same_ids(tok, new_tok, old_to_new, held_in)

    new_batch = new_tok(texts, padding=True, return_tensors="pt")
    assert torch.equal(new_batch["input_ids"], _remap(old_to_new, batch["input_ids"].clone()))
    with torch.no_grad():
        after = model(**new_batch).logits
    order = sorted(old_to_new, key=old_to_new.__getitem__)
    assert torch.equal(after, before[..., order])

    # held-out text: every byte is still spelled, so decoding gives the text back
    for text in held_out:
        ids = new_tok(text).input_ids
        assert max(ids) < len(new_tok)
        assert new_tok.decode(ids) == tok.decode(tok(text).input_ids) == text
    assert len(new_tok(ODD[0]).input_ids) > len(tok(ODD[0]).input_ids)  # longer, not broken

    model.save_pretrained(tmp_path / "out")
    new_tok.save_pretrained(tmp_path / "out")
    model2 = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    tok2 = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert model2.lm_head.weight is model2.model.embed_tokens.weight
    assert model2.generation_config.eos_token_id == [old_to_new[2], old_to_new[0]]
    assert tok2.chat_template == tok.chat_template
    for text in held_in + held_out:
        assert tok2(text).input_ids == new_tok(text).input_ids, text
    with torch.no_grad():
        assert torch.equal(model2(**tok2(texts, padding=True, return_tensors="pt")).logits, after)


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------


def test_a_fresh_tokenizer_keeps_its_padding_and_truncation(reviews):
    """MiniLM's tokenizer.json pads to 128 and truncates: the rebuilt backend keeps that, with the new pad id."""
    folder = _asset("all-MiniLM-L6-v2")
    keep = corpus_token_ids(AutoTokenizer.from_pretrained(folder), reviews[0][:20])
    tok = AutoTokenizer.from_pretrained(folder)  # never called, so its backend still pads
    _, new_tok, old_to_new = prune_vocab(_bert("classifier", len(tok)), tok, keep)
    padding = new_tok.backend_tokenizer.padding
    assert padding["pad_id"] == old_to_new[tok.backend_tokenizer.padding["pad_id"]]
    assert padding["length"] == new_tok.backend_tokenizer.truncation["max_length"] == 128


@pytest.mark.parametrize("corpus", [[], ["", "   ", "\n"]])
def test_empty_corpus_is_a_clear_error_and_the_model_is_untouched(corpus):
    tok = AutoTokenizer.from_pretrained(_asset("all-MiniLM-L6-v2"))
    model = _bert("classifier", len(tok))
    state = _state(model)
    with pytest.raises(PrunekitError, match="vocabulary corpus has"):
        corpus_token_ids(tok, corpus)
    with pytest.raises(PrunekitError, match="keep_ids is empty"):
        prune_vocab(model, tok, [])
    with pytest.raises(PrunekitError, match="keep_ids must be token ids"):
        prune_vocab(model, tok, [5, len(tok)])
    with pytest.raises(PrunekitError, match="text #1 is NoneType"):
        corpus_token_ids(tok, ["fine", None])
    model.config.eos_token_id = len(tok) + 3
    with pytest.raises(PrunekitError, match="eos_token_id"):
        prune_vocab(model, tok, [2000, 2001])
    assert model.config.vocab_size == len(tok)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


# ----------------------------------------------------------------------------------------------
# Tokenizer corner cases (small synthetic tokenizers)
# ----------------------------------------------------------------------------------------------


def test_wordpiece_keeps_the_pieces_a_word_tried_before_falling_back_to_unk():
    """'abcx' is [UNK] (greedy 'abc' then no '##x'); with 'abc' dropped, 'ab' + '##cx' would spell it."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "ab", "abc", "z", "##cx", "never"]
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    corpus = ["abcx ab", "zcx"]
    assert tok(corpus[0]).input_ids == [2, 1, 5, 3]
    keep = corpus_token_ids(tok, corpus)
    assert 6 in keep and 9 not in keep
    model, new_tok, old_to_new = prune_vocab(BertModel(BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1,
                                                                  num_attention_heads=1, intermediate_size=8)),
                                             tok, keep)
    _same_ids(tok, new_tok, old_to_new, corpus)
    assert len(new_tok) == 9


@pytest.mark.parametrize("kind", ["Unigram", "WordLevel"])
def test_unigram_and_wordlevel_tokenizers(kind, reviews):
    held_in, held_out = reviews
    if kind == "Unigram":
        backend = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(vocab_size=400, special_tokens=["<pad>", "<unk>"], unk_token="<unk>")
    else:
        backend = Tokenizer(models.WordLevel(unk_token="<unk>"))
        trainer = trainers.WordLevelTrainer(special_tokens=["<pad>", "<unk>"])
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Metaspace() if kind == "Unigram" else pre_tokenizers.Whitespace()
    backend.train_from_iterator(held_in + held_out[:20], trainer=trainer)
    backend.add_special_tokens(["<cls>"])  # the last id: it moves, and the post-processor must follow
    cls_id = backend.token_to_id("<cls>")
    backend.post_processor = processors.TemplateProcessing(single="<cls> $A", special_tokens=[("<cls>", cls_id)])
    tok = TokenizersBackend(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>")
    corpus = held_in[:100]
    keep = corpus_token_ids(tok, corpus)
    assert len(keep) < len(tok) and tok("a").input_ids[0] == cls_id
    model = BertModel(BertConfig(vocab_size=len(tok), hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                                 intermediate_size=8))
    model, new_tok, old_to_new = prune_vocab(model, tok, keep)
    _same_ids(tok, new_tok, old_to_new, corpus)
    assert new_tok("a").input_ids[0] == old_to_new[cls_id] == len(new_tok) - 1 != cls_id
    for text in held_out:
        ids = new_tok(text).input_ids
        assert ids and max(ids) < len(new_tok)
