"""A word-level tokenizer whose vocabulary comes from the training split, as a standard HF tokenizer.

It is a ``PreTrainedTokenizerFast`` over a ``tokenizers`` WordLevel model (BERT-style lower-casing and
punctuation splitting), so padding, batching, ``save_pretrained`` and ``AutoTokenizer`` all work as
for a transformer's tokenizer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from prunekit.errors import PrunekitError

PAD, UNK = "[PAD]", "[UNK]"


def build_vocab_tokenizer(texts: Iterable[str], min_freq: int = 2, max_size: int = 30000) -> PreTrainedTokenizerBase:
    """Words seen at least ``min_freq`` times (the ``max_size`` most frequent); id 0 pads, id 1 is unknown."""
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre = pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)))
    words = [w for w, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_freq][: max_size - 2]
    if not words:
        raise PrunekitError(f"no word occurs {min_freq} times in the training split: cannot build a vocabulary")
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate([PAD, UNK, *words])}, unk_token=UNK))
    tok.normalizer, tok.pre_tokenizer = normalizer, pre
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=UNK, pad_token=PAD,
                                   model_input_names=["input_ids", "attention_mask"])
