"""Small text classifiers prunekit can train and prune besides transformers: LSTM / GRU / RNN and TextCNN.

``new_text_model`` builds one for a dataset (tokenizer from a model folder or a vocabulary built from
the training split); :mod:`prunekit.io.textnet` saves and reloads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from prunekit.data import ClassificationData
from prunekit.errors import PrunekitError
from prunekit.folders import load_tokenizer, locate
from prunekit.models.base import MODEL_TYPES, RECURRENT_TYPES, TextNet, TextNetConfig
from prunekit.models.custom import import_class, new_custom_model
from prunekit.models.recurrent import RecurrentClassifier
from prunekit.models.textcnn import TextCNN
from prunekit.models.vocab import build_vocab_tokenizer

#: --arch name -> (model_type, bidirectional)
ARCHS: dict[str, tuple[str, bool]] = {"lstm": ("lstm", False), "bilstm": ("lstm", True), "gru": ("gru", False),
                                      "bigru": ("gru", True), "rnn": ("rnn", False), "birnn": ("rnn", True),
                                      "textcnn": ("textcnn", False)}


@dataclass
class TextNetOptions:
    """A new model's shape. ``width``: hidden units per direction (recurrent, default 256) or filters per
    kernel size (TextCNN, default 100). ``tokenizer``: ``"vocab"`` builds a word vocabulary from the
    training split; anything else is a model folder or built-in name whose tokenizer is reused."""

    arch: str = "bilstm"
    tokenizer: str = "vocab"
    embed_dim: int = 128
    width: int | None = None
    num_layers: int = 1
    kernel_sizes: tuple[int, ...] = (3, 4, 5)
    dropout: float = 0.3
    min_freq: int = 2
    #: instead of ``arch``: a user's own class, ``pkg.mod:ClassName``, built with ``module_kwargs``
    module: str | None = None
    module_kwargs: dict[str, Any] | None = None


def build_model(config: TextNetConfig) -> TextNet:
    return TextCNN(config) if config.model_type == "textcnn" else RecurrentClassifier(config)


def new_text_model(opts: TextNetOptions, data: ClassificationData) -> tuple[TextNet, PreTrainedTokenizerBase]:
    """A freshly initialised model and its tokenizer for ``data``'s labels (``opts.module``: an instance of
    the user's class, traced and adapted by :mod:`prunekit.models.custom`)."""
    if opts.module is not None:
        import_class(opts.module)  # a wrong path fails before a vocabulary is built
        tokenizer = _tokenizer(opts, data)
        return new_custom_model(opts.module, opts.module_kwargs, len(tokenizer), data.label_names,
                                tokenizer.pad_token_id), tokenizer
    if opts.arch not in ARCHS:
        raise PrunekitError(f"unknown --arch {opts.arch!r}; choose one of {', '.join(ARCHS)}")
    if opts.embed_dim < 1 or (opts.width is not None and opts.width < 1) or opts.num_layers < 1:
        raise PrunekitError("--embed-dim, --width and --num-layers must be positive")
    model_type, bidirectional = ARCHS[opts.arch]
    tokenizer = _tokenizer(opts, data)
    width = opts.width or (100 if model_type == "textcnn" else 256)
    config = TextNetConfig(
        model_type=model_type, vocab_size=len(tokenizer), num_labels=data.num_labels, embed_dim=opts.embed_dim,
        hidden_size=width, num_layers=opts.num_layers, bidirectional=bidirectional,
        kernel_sizes=list(opts.kernel_sizes), num_filters=[width] * len(opts.kernel_sizes), dropout=opts.dropout,
        pad_token_id=tokenizer.pad_token_id, id2label=dict(enumerate(data.label_names)),
    )
    return build_model(config), tokenizer


def _tokenizer(opts: TextNetOptions, data: ClassificationData) -> PreTrainedTokenizerBase:
    if opts.tokenizer == "vocab":
        tokenizer = build_vocab_tokenizer((" ".join(t) for t in data.train.texts), min_freq=opts.min_freq)
    else:
        tokenizer = load_tokenizer(locate(opts.tokenizer))
    if tokenizer.pad_token_id is None:
        raise PrunekitError(f"tokenizer {opts.tokenizer!r} has no padding token")
    return tokenizer


__all__ = ["ARCHS", "MODEL_TYPES", "RECURRENT_TYPES", "RecurrentClassifier", "TextCNN", "TextNet",
           "TextNetConfig", "TextNetOptions", "build_model", "build_vocab_tokenizer", "new_text_model"]
