"""What every small text classifier prunekit trains shares: its config and the HF-style call signature.

The models answer ``model(input_ids=..., attention_mask=..., labels=...)`` with ``.loss`` and ``.logits``
and carry ``model.config.num_labels`` / ``vocab_size`` / ``model_type``, so the training loop, the
evaluation code, latency measurement and the reports treat them exactly like a transformer classifier.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.modeling_outputs import SequenceClassifierOutput

from prunekit.errors import PrunekitError

RECURRENT_TYPES = ("lstm", "gru", "rnn")
MODEL_TYPES = (*RECURRENT_TYPES, "textcnn")
FORMAT = "prunekit-textnet"
FORMAT_VERSION = 1


@dataclass
class TextNetConfig:
    """Everything needed to rebuild a model, including widths that pruning changed.

    ``hidden_size`` is per direction and the same in every layer (one ``nn.LSTM`` holds them all);
    ``num_filters`` is per kernel size and may differ after pruning.
    """

    model_type: str
    vocab_size: int
    num_labels: int = 2
    embed_dim: int = 128
    hidden_size: int = 256
    num_layers: int = 1
    bidirectional: bool = False
    kernel_sizes: list[int] = field(default_factory=lambda: [3, 4, 5])
    num_filters: list[int] = field(default_factory=lambda: [100, 100, 100])
    dropout: float = 0.3
    pad_token_id: int = 0
    id2label: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.model_type not in MODEL_TYPES:
            raise PrunekitError(f"unknown text model type {self.model_type!r}; choose one of {', '.join(MODEL_TYPES)}")
        self.id2label = {int(k): str(v) for k, v in self.id2label.items()} or {
            i: str(i) for i in range(self.num_labels)}
        self.kernel_sizes, self.num_filters = list(self.kernel_sizes), list(self.num_filters)
        if len(self.kernel_sizes) != len(self.num_filters):
            raise PrunekitError("kernel_sizes and num_filters must have one entry per convolution")

    @property
    def label2id(self) -> dict[str, int]:
        return {v: k for k, v in self.id2label.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TextNetConfig:
        if d.get("format") != FORMAT or d.get("version") != FORMAT_VERSION:
            raise PrunekitError(f"unsupported text model format {d.get('format')!r} version {d.get('version')!r} "
                                f"(this prunekit reads {FORMAT} {FORMAT_VERSION})")
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in known})


class TextNet(nn.Module):
    """Base of the built-in models: embedding → encoder (``features``) → dropout → Linear classifier."""

    def __init__(self, config: TextNetConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim, padding_idx=config.pad_token_id)
        self.dropout = nn.Dropout(config.dropout)

    def features(self, x: Tensor, mask: Tensor) -> Tensor:
        """(batch, seq, embed) embeddings and a bool mask → (batch, features) for the classifier."""
        raise NotImplementedError

    def sync_config(self) -> None:
        """Write the modules' real widths into the config after surgery, so the config rebuilds them."""
        self.config.vocab_size, self.config.embed_dim = self.embedding.weight.shape

    def for_export(self) -> nn.Module:
        """A module mapping (input_ids, attention_mask) to the same logits in eval mode, written so that ONNX
        exporters can trace it with dynamic batch and sequence axes (see :mod:`prunekit.io.onnx`)."""
        return _Logits(self)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None,
                **_: Any) -> SequenceClassifierOutput:
        # other tokenizer outputs (token_type_ids) are accepted and ignored, like an HF model's unused inputs
        mask = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
        x = self.dropout(self.embedding(input_ids))
        logits = self.classifier(self.dropout(self.features(x, mask)))
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


class _Logits(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def masked_max(x: Tensor, valid: Tensor) -> Tensor:
    """Max over time (dim 1) of the valid positions only, so padding never changes a prediction."""
    return x.masked_fill(~valid[..., None], float("-inf")).amax(1)


def text_lengths(mask: Tensor) -> Tensor:
    """Tokens per text from a right-padded attention mask; an empty text counts as one (padding) token."""
    return mask.sum(1).clamp(min=1)


def valid_positions(lengths: Tensor, size: int) -> Tensor:
    """(batch, size) bool: position t < length."""
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]
