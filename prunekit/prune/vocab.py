"""Vocabulary pruning: keep only the tokens a corpus uses, shrink the embeddings, rebuild the tokenizer.

A classifier fine-tuned on movie reviews never sees most of a 30k-50k token vocabulary, yet the
embedding matrix (and a tied LM head) is often the largest single tensor of a small model. This module
drops the rows nobody uses and rebuilds a *fast* tokenizer whose vocabulary holds exactly the kept
tokens with new contiguous ids, so that for every corpus text::

    new_tok(text).input_ids == [old_to_new[i] for i in old_tok(text).input_ids]

and the model's outputs on that text do not change (an LM's logits are the old ones restricted to the
kept columns).

What is always kept, whatever the corpus, so that *any* text the original tokenizer could encode still
encodes to valid ids (possibly longer, or with more unknown tokens):

- every special token (named ones, special added tokens, those the post-processor and padding insert)
  and every token id the model config or generation config names (pad/bos/eos/...);
- WordPiece / WordLevel: the unknown token. A held-out word that the kept pieces cannot spell becomes
  ``[UNK]``. For exactness, the pieces a corpus word tried before it fell back to ``[UNK]`` are kept too
  (WordPiece is greedy: without them the word could be spelled by shorter kept pieces instead).
- BPE: the unknown token if any, the 256 ``<0xNN>`` byte-fallback tokens if ``byte_fallback`` is on, and
  the initial alphabet (every one-symbol token, i.e. the byte-level alphabet for GPT-2-style BPE), so
  every held-out word can still be spelled. Each kept token also keeps the tokens its merges are built
  from, recursively: BPE only reaches a token through its intermediate merges, which never appear in the
  output. Only merges whose two parts and result are all kept survive, in their original order, so the
  merge priority (and hence every corpus tokenisation) is unchanged.
- Unigram: the unknown piece, the byte-fallback pieces, and the lowest-scoring piece (the unknown-token
  penalty is computed from the minimum score, so removing it would change Viterbi choices). Without an
  unknown piece every single-character piece is kept too, since an unknown character would be an error.

Besides the input embedding and the LM head, per-token logit biases outside the head (BERT's
``cls.predictions.bias``, BART's ``final_logits_bias``) shrink too. Not handled, with a
:class:`PrunekitError`: tokenizers without a ``tokenizers`` backend (slow/Python tokenizers), input
embeddings that are not an ``nn.Embedding``, and any other tensor with a vocabulary-sized dimension.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from tokenizers import Tokenizer, pre_tokenizers
from torch import Tensor, nn

from prunekit.errors import PrunekitError

_MODEL_TYPES = ("WordPiece", "BPE", "Unigram", "WordLevel")
# Constructor keywords that name the *old* vocabulary (files, extracted vocab/merges, ids): a rebuilt
# tokenizer must not inherit them, or save_pretrained would copy the stale vocab.txt next to it.
_STALE_KWARGS = ("vocab_file", "merges_file", "tokenizer_file", "vocab", "merges", "added_tokens_decoder",
                 "name_or_path", "post_processor", "tokenizer_padding", "tokenizer_truncation",
                 "_json_truncation", "_json_padding", "tokenizer_object")


# ----------------------------------------------------------------------------------------------
# Reading the tokenizer
# ----------------------------------------------------------------------------------------------


def _backend(tokenizer: Any) -> Tokenizer:
    """The ``tokenizers.Tokenizer`` behind a transformers tokenizer (only fast tokenizers can be edited)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if not isinstance(backend, Tokenizer):
        raise PrunekitError(f"vocabulary pruning needs a fast (tokenizers-backed) tokenizer, got "
                            f"{type(tokenizer).__name__}")
    return backend


def _spec(backend: Tokenizer) -> dict[str, Any]:
    """The backend's tokenizer.json as a dict, with a clear error for model types we cannot edit."""
    spec = json.loads(backend.to_str())
    kind = spec.get("model", {}).get("type")
    if kind not in _MODEL_TYPES:
        raise PrunekitError(f"vocabulary pruning supports {', '.join(_MODEL_TYPES)} tokenizers, not {kind!r}")
    return spec


def _merges(model: dict[str, Any]) -> list[tuple[str, str]]:
    """BPE merges as pairs (tokenizer.json stores ``[a, b]`` lists, or ``"a b"`` strings in older files)."""
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else (m[0], m[1]) for m in model.get("merges", [])]


def _merge_result(model: dict[str, Any], a: str, b: str) -> str:
    """The token a BPE merge produces (a continuing-subword prefix on the right part is dropped)."""
    prefix = model.get("continuing_subword_prefix") or ""
    return a + (b[len(prefix):] if prefix and b.startswith(prefix) else b)


def _is_byte_level(spec: dict[str, Any]) -> bool:
    """Does the pipeline map text to bytes first (GPT-2 style), so the 256-symbol alphabet spells anything?"""
    def walk(node: Any) -> bool:
        if isinstance(node, dict):
            return node.get("type") == "ByteLevel" or any(walk(v) for v in node.values())
        if isinstance(node, list):
            return any(walk(v) for v in node)
        return False
    return walk(spec.get("pre_tokenizer"))


def _post_processor_tokens(node: Any) -> set[str]:
    """Token strings a post-processor inserts (TemplateProcessing specials, BERT/RoBERTa cls and sep)."""
    found: set[str] = set()
    if isinstance(node, dict):
        kind = node.get("type")
        if kind == "TemplateProcessing":
            for entry in node.get("special_tokens", {}).values():
                found.update(entry.get("tokens", []))
        elif kind in ("BertProcessing", "RobertaProcessing"):
            found.update(node[key][0] for key in ("sep", "cls") if key in node)
        for proc in node.get("processors", []) or []:
            found |= _post_processor_tokens(proc)
    return found


def _ids(backend: Tokenizer, tokens: Iterable[str | None]) -> set[int]:
    found = (backend.token_to_id(t) for t in tokens if t is not None)
    return {i for i in found if i is not None}


def always_kept_ids(tokenizer: Any) -> set[int]:
    """Ids kept whatever the corpus, so any text stays encodable (see the module docstring for the rules)."""
    backend = _backend(tokenizer)
    spec = _spec(backend)
    model = spec["model"]
    kind = model["type"]
    keep = set(tokenizer.all_special_ids)
    keep |= {t["id"] for t in spec.get("added_tokens", []) if t.get("special")}
    keep |= _ids(backend, _post_processor_tokens(spec.get("post_processor")))
    if backend.padding:
        keep |= _ids(backend, [backend.padding.get("pad_token")])
    if kind in ("WordPiece", "WordLevel"):
        keep |= _ids(backend, [model.get("unk_token")])
    elif kind == "BPE":
        keep |= _ids(backend, [model.get("unk_token")])
        if model.get("byte_fallback"):
            keep |= _ids(backend, (f"<0x{b:02X}>" for b in range(256)))
        if _is_byte_level(spec):
            keep |= _ids(backend, pre_tokenizers.ByteLevel.alphabet())
        prefix, suffix = model.get("continuing_subword_prefix") or "", model.get("end_of_word_suffix") or ""
        for token, i in model["vocab"].items():
            core = token[len(prefix):] if prefix and token.startswith(prefix) else token
            core = core[: -len(suffix)] if suffix and core.endswith(suffix) else core
            if len(core) == 1:
                keep.add(i)
    else:  # Unigram: vocab is [[piece, score], ...] in id order
        vocab = model["vocab"]
        if model.get("unk_id") is not None:
            keep.add(model["unk_id"])
        elif vocab:
            keep |= {i for i, (piece, _) in enumerate(vocab) if len(piece) == 1}
        if model.get("byte_fallback"):
            keep |= _ids(backend, (f"<0x{b:02X}>" for b in range(256)))
        if vocab:
            keep.add(min(range(len(vocab)), key=lambda i: vocab[i][1]))
    return keep


def _bpe_closure(backend: Tokenizer, spec: dict[str, Any], keep: set[int]) -> set[int]:
    """Add, recursively, the parts of every merge that produces a kept token (BPE can only reach a token
    through them). Other model types need nothing more."""
    model = spec["model"]
    if model["type"] != "BPE":
        return set(keep)
    makers: dict[str, list[tuple[str, str]]] = {}
    for a, b in _merges(model):
        makers.setdefault(_merge_result(model, a, b), []).append((a, b))
    vocab = model["vocab"]
    out = set(keep)
    todo = [t for t in (backend.id_to_token(i) for i in keep) if t in makers]
    while todo:
        for a, b in makers.pop(todo.pop(), []):
            for part in (a, b):
                i = vocab.get(part)
                if i is not None and i not in out:
                    out.add(i)
                    if part in makers:
                        todo.append(part)
    return out


# ----------------------------------------------------------------------------------------------
# The corpus
# ----------------------------------------------------------------------------------------------


def _batches(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for n, text in enumerate(texts):
        if not isinstance(text, str):
            raise PrunekitError(f"vocabulary corpus: text #{n} is {type(text).__name__}, not a string")
        batch.append(text)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _wordpiece_tried(backend: Tokenizer, model: dict[str, Any], text: str) -> set[int]:
    """Pieces WordPiece matched in words of ``text`` that ended as [UNK] (see the module docstring).

    WordPiece takes the longest matching prefix, then the longest ``##`` continuation, and gives up on
    the whole word when nothing matches; if a matched piece were dropped because it never reached the
    output, the pruned tokenizer could take a shorter piece and spell the word instead of giving [UNK].
    """
    vocab, prefix = model["vocab"], model.get("continuing_subword_prefix") or "##"
    max_chars = model.get("max_input_chars_per_word", 100)
    norm = backend.normalizer.normalize_str(text) if backend.normalizer else text
    words = backend.pre_tokenizer.pre_tokenize_str(norm) if backend.pre_tokenizer else [(norm, None)]
    tried: set[int] = set()
    for word, _ in words:
        if len(word) > max_chars:
            continue
        start = 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else prefix + word[start:end]
                if piece in vocab:
                    tried.add(vocab[piece])
                    start = end
                    break
            else:
                break
    return tried


def corpus_token_ids(tokenizer: Any, texts: Iterable[str], batch_size: int = 1000) -> set[int]:
    """Every token id the model's own tokenizer produces on ``texts`` (special tokens included), plus the
    ids that must always be kept (:func:`always_kept_ids`) and what BPE needs to reach them.

    The result is what :func:`prune_vocab` should keep. Texts are encoded in batches without truncation
    or padding, so long texts count in full. An empty corpus (no texts, or none yielding an ordinary
    token) raises :class:`PrunekitError`: pruning to the special tokens alone is never what anyone wants.
    """
    if batch_size < 1:
        raise PrunekitError(f"batch_size must be at least 1, got {batch_size}")
    backend = _backend(tokenizer)
    spec = _spec(backend)
    model = spec["model"]
    unk = backend.token_to_id(model.get("unk_token") or "") if model["type"] == "WordPiece" else None
    seen: set[int] = set()
    n_texts = 0
    for batch in _batches(texts, batch_size):
        n_texts += len(batch)
        enc = tokenizer(batch, add_special_tokens=True, truncation=False, padding=False,
                        return_attention_mask=False, return_token_type_ids=False)
        for text, ids in zip(batch, enc["input_ids"], strict=True):
            seen.update(ids)
            if unk is not None and unk in ids:
                seen |= _wordpiece_tried(backend, model, text)
    always = always_kept_ids(tokenizer)
    if not seen - always:
        what = "has no texts" if n_texts == 0 else f"has {n_texts} texts but no token beyond the special ones"
        raise PrunekitError(f"the vocabulary corpus {what}; give it the text the model will see")
    return _bpe_closure(backend, spec, seen | always)


# ----------------------------------------------------------------------------------------------
# The new tokenizer
# ----------------------------------------------------------------------------------------------


def _remap_post_processor(node: Any, vocab: dict[str, int]) -> None:
    """Point the post-processor's special tokens at their new ids (in place)."""
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    if kind == "TemplateProcessing":
        for entry in node.get("special_tokens", {}).values():
            entry["ids"] = [vocab[t] for t in entry.get("tokens", [])]
    elif kind in ("BertProcessing", "RobertaProcessing"):
        for key in ("sep", "cls"):
            if key in node:
                node[key] = [node[key][0], vocab[node[key][0]]]
    for proc in node.get("processors", []) or []:
        _remap_post_processor(proc, vocab)


def _pruned_backend(backend: Tokenizer, keep: set[int]) -> tuple[Tokenizer, dict[int, int]]:
    """A ``tokenizers.Tokenizer`` with only the ``keep`` tokens, renumbered 0..n-1 in their old order."""
    spec = _spec(backend)
    model = spec["model"]
    kind = model["type"]
    if kind == "Unigram":
        old = list(range(len(model["vocab"])))
        kept = [i for i in old if i in keep]
        if model.get("unk_id") is not None:
            model["unk_id"] = kept.index(model["unk_id"])
        model["vocab"] = [model["vocab"][i] for i in kept]
        new_vocab = {piece: n for n, (piece, _) in enumerate(model["vocab"])}
    else:
        items = sorted(((i, t) for t, i in model["vocab"].items() if i in keep))
        new_vocab = {t: n for n, (_, t) in enumerate(items)}
        model["vocab"] = new_vocab
    if kind == "BPE":
        pairs = [(a, b) for a, b in _merges(model)
                 if a in new_vocab and b in new_vocab and _merge_result(model, a, b) in new_vocab]
        model["merges"] = [[a, b] for a, b in pairs]
    # Added tokens: those in the model vocabulary take its id, the rest follow it in their old order.
    vocab = dict(new_vocab)
    added = [t for t in sorted(spec.get("added_tokens", []), key=lambda t: t["id"]) if t["id"] in keep]
    for tok in added:
        if tok["content"] not in vocab:
            vocab[tok["content"]] = len(vocab)
        tok["id"] = vocab[tok["content"]]
    spec["added_tokens"] = sorted(added, key=lambda t: t["id"])
    _remap_post_processor(spec.get("post_processor"), vocab)
    if spec.get("padding"):
        spec["padding"]["pad_id"] = vocab[spec["padding"]["pad_token"]]
    new = Tokenizer.from_str(json.dumps(spec))
    old_to_new = {i: new.token_to_id(backend.id_to_token(i)) for i in sorted(keep)}
    got = list(old_to_new.values())
    if None in got or sorted(got) != list(range(len(keep))) or new.get_vocab_size(with_added_tokens=True) != len(keep):
        raise PrunekitError("this tokenizer cannot be pruned: some token strings map to several ids "
                            "(or an added token shadows a vocabulary entry)")
    return new, old_to_new


def _wrap(tokenizer: Any, backend: Tokenizer) -> Any:
    """A transformers tokenizer of the same class and settings around the pruned backend.

    Mirrors transformers' ``train_new_from_iterator``: the old constructor arguments minus anything that
    names the old vocabulary, the same special tokens (as strings: their ids are looked up afresh).
    """
    kwargs = {k: v for k, v in tokenizer.init_kwargs.items() if k not in _STALE_KWARGS}
    for attr in getattr(tokenizer, "SPECIAL_TOKENS_ATTRIBUTES", ()):
        value = tokenizer._special_tokens_map.get(attr) if hasattr(tokenizer, "_special_tokens_map") else None
        if value is not None:
            kwargs[attr] = value
    extra = list(getattr(tokenizer, "extra_special_tokens", None) or [])
    if extra:
        kwargs["extra_special_tokens"] = extra
    cls = type(tokenizer)
    try:
        new = cls(tokenizer_object=backend, **kwargs)
    except TypeError as err:  # a class that builds and passes its own tokenizer_object
        if "tokenizer_object" not in str(err):
            raise
        new = cls(**kwargs)
        new._tokenizer = backend
    return new


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------


def _token_id_fields(config: Any) -> dict[str, int | list[int]]:
    """Config/generation-config fields that hold token ids (``*_token_id``: ints or lists of ints)."""
    if config is None:
        return {}
    fields = config.to_dict() if hasattr(config, "to_dict") else vars(config)
    out: dict[str, int | list[int]] = {}
    for key, value in fields.items():
        if not key.endswith("_token_id") or value is None or isinstance(value, bool):
            continue
        if isinstance(value, int) or (isinstance(value, list) and all(isinstance(v, int) for v in value)):
            out[key] = value
    return out


def _flat(value: int | list[int]) -> list[int]:
    return [value] if isinstance(value, int) else list(value)


def _is_logit_bias(name: str, t: Tensor, rows: int) -> bool:
    """A per-token output bias outside the head (BERT's ``cls.predictions.bias``, BART's ``final_logits_bias``)."""
    return name.rpartition(".")[2].endswith("bias") and t.dim() >= 1 and t.shape[-1] == rows and t.numel() == rows


def _vocab_tensors(model: nn.Module, rows: int) -> tuple[nn.Embedding, nn.Module | None, dict[int, int]]:
    """The input embedding, the LM head (if any) and ``{id(tensor): vocabulary dim}`` for every tensor to
    shrink, after checking that nothing else in the model is vocabulary-sized."""
    emb = model.get_input_embeddings()
    if not isinstance(emb, nn.Embedding):
        raise PrunekitError(f"vocabulary pruning needs an nn.Embedding input embedding, got {type(emb).__name__}")
    try:
        head = model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        head = None
    dims = {id(emb.weight): 0}
    if head is not None:
        if not isinstance(head, nn.Linear) or head.weight.shape[0] != rows:
            raise PrunekitError(f"vocabulary pruning cannot shrink the output head {type(head).__name__} "
                                f"(weight {tuple(head.weight.shape)}, vocabulary {rows})")
        dims[id(head.weight)] = 0
        if head.bias is not None:
            dims[id(head.bias)] = 0
    other = []
    for name, t in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        if id(t) in dims or rows not in t.shape:
            continue
        if _is_logit_bias(name, t, rows):
            dims[id(t)] = t.dim() - 1
        else:
            other.append(name)
    if other:
        raise PrunekitError(f"vocabulary pruning does not know how to shrink {', '.join(other[:3])} "
                            f"(a dimension equals the vocabulary size {rows})")
    return emb, head, dims


@torch.no_grad()
def _shrink(model: nn.Module, dims: dict[int, int], index: Tensor) -> None:
    """Replace every vocabulary-indexed parameter or buffer by its kept entries; a tensor shared by several
    modules (a tied LM head) is replaced by one new tensor everywhere, so it stays tied."""
    new: dict[int, Tensor] = {}
    for module in model.modules():
        for store in (module._parameters, module._buffers):
            for name, t in list(store.items()):
                if t is None or id(t) not in dims:
                    continue
                if id(t) not in new:
                    value = t.index_select(dims[id(t)], index.to(t.device)).contiguous()
                    new[id(t)] = nn.Parameter(value, requires_grad=t.requires_grad) if isinstance(
                        t, nn.Parameter) else value
                store[name] = new[id(t)]


def prune_vocab(model: nn.Module, tokenizer: Any, keep_ids: Iterable[int]
                ) -> tuple[nn.Module, Any, dict[int, int]]:
    """Keep only tokens ``keep_ids`` (usually :func:`corpus_token_ids`) in the model and its tokenizer.

    Shrinks the input embedding and a tied or untied LM head (and its bias), sets ``config.vocab_size``
    and remaps every ``*_token_id`` in the config and generation config. The ids in
    :func:`always_kept_ids`, those the configs name, and the BPE parts of kept tokens are added to
    ``keep_ids``. Embedding rows beyond the tokenizer's vocabulary (padding rows) are dropped.

    Returns ``(model, new_tokenizer, old_to_new)``; the model is changed in place, the old tokenizer is
    not. Everything is checked and the new tokenizer built before the model is touched, so an error
    leaves it as it was.
    """
    backend = _backend(tokenizer)
    spec = _spec(backend)
    n_tok = backend.get_vocab_size(with_added_tokens=True)
    keep: set[int] = set()
    for i in keep_ids:
        try:
            if isinstance(i, bool):
                raise TypeError
            keep.add(operator.index(i))  # ints, numpy integers, 0-d integer tensors
        except TypeError:
            raise PrunekitError(f"keep_ids must hold integer token ids, got {i!r}") from None
    if not keep:
        raise PrunekitError("keep_ids is empty: nothing to keep (was the vocabulary corpus empty?)")
    if min(keep) < 0 or max(keep) >= n_tok:
        raise PrunekitError(f"keep_ids must be token ids in [0, {n_tok}), got {min(keep)}..{max(keep)}")
    emb = model.get_input_embeddings()
    rows = getattr(getattr(emb, "weight", None), "shape", (0,))[0]
    if rows < n_tok:
        raise PrunekitError(f"the tokenizer has {n_tok} tokens but the model's embedding only {rows} rows: "
                            "they do not belong together")
    configs = [model.config, getattr(model, "generation_config", None)]
    fields = [_token_id_fields(c) for c in configs]
    for c, f in zip(configs, fields, strict=True):
        for key, value in f.items():
            bad = [v for v in _flat(value) if not 0 <= v < n_tok]
            if bad:
                raise PrunekitError(f"{type(c).__name__}.{key} = {value} is not a token of the tokenizer "
                                    f"({n_tok} tokens); fix it before pruning the vocabulary")
            keep.update(_flat(value))
    keep = _bpe_closure(backend, spec, keep | always_kept_ids(tokenizer))
    emb, head, dims = _vocab_tensors(model, rows)
    new_backend, old_to_new = _pruned_backend(backend, keep)
    new_tokenizer = _wrap(tokenizer, new_backend)
    if len(new_tokenizer) != len(keep):
        raise RuntimeError(f"rebuilt tokenizer has {len(new_tokenizer)} tokens, expected {len(keep)}")

    # --- nothing has changed so far; now the model ---
    order = sorted(keep, key=old_to_new.__getitem__)
    _shrink(model, dims, torch.tensor(order, dtype=torch.long))
    n = len(order)
    emb = model.get_input_embeddings()
    emb.num_embeddings = n
    if emb.padding_idx is not None:
        emb.padding_idx = old_to_new.get(emb.padding_idx)
    if head is not None:
        head.out_features = n
    for module in model.modules():
        if isinstance(getattr(module, "vocab_size", None), int) and module.vocab_size == rows:
            module.vocab_size = n
    text_config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    text_config.vocab_size = n
    for c, f in zip(configs, fields, strict=True):
        for key, value in f.items():
            setattr(c, key, old_to_new[value] if isinstance(value, int) else [old_to_new[v] for v in value])
    return model, new_tokenizer, old_to_new


def check_vocab_mapping(old_tokenizer: Any, new_tokenizer: Any, old_to_new: dict[int, int],
                        texts: Iterable[str], batch_size: int = 1000) -> int:
    """Raise :class:`PrunekitError` unless the new tokenizer gives the remapped old ids on every text.

    Returns how many texts were checked. Use it on the pruning corpus: held-out text is *expected* to
    tokenise differently (into more pieces, or [UNK]) wherever it needs a dropped token.
    """
    n = 0
    for batch in _batches(texts, batch_size):
        call = {"add_special_tokens": True, "truncation": False, "padding": False}
        old = old_tokenizer(batch, **call)["input_ids"]
        new = new_tokenizer(batch, **call)["input_ids"]
        for text, a, b in zip(batch, old, new, strict=True):
            want = [old_to_new.get(i) for i in a]
            if want != b:
                raise PrunekitError(f"pruned tokenizer disagrees on text #{n}: {text[:60]!r}")
            n += 1
    return n
