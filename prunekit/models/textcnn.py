"""TextCNN (Kim 2014): parallel Conv1d filters of several widths over the embeddings, ReLU, max over time,
concatenated, then a Linear classifier."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prunekit.models.base import TextNet, TextNetConfig, text_lengths, valid_positions


class TextCNN(TextNet):
    """Only windows that lie inside the text are pooled (a text shorter than a kernel gets one window,
    zero-padded), so a prediction does not depend on how much padding its batch carries."""

    def __init__(self, config: TextNetConfig) -> None:
        super().__init__(config)
        self.convs = nn.ModuleList(nn.Conv1d(config.embed_dim, n, k) for k, n in
                                   zip(config.kernel_sizes, config.num_filters, strict=True))
        self.classifier = nn.Linear(sum(config.num_filters), config.num_labels)

    def features(self, x: Tensor, mask: Tensor) -> Tensor:
        return self._pooled(x, mask, max(0, self._widest() - x.shape[1]))

    def _widest(self) -> int:
        return max(conv.kernel_size[0] for conv in self.convs)

    def _pooled(self, x: Tensor, mask: Tensor, pad: int) -> Tensor:
        """Max-pooled filters over the valid windows, after ``pad`` zero columns at the end: as many as the
        widest kernel lacks (any more only adds windows that are masked out anyway)."""
        lengths = text_lengths(mask)
        # (batch, embed, seq), padding exactly zero; contiguous once, not once per conv
        x = (x * mask[..., None].to(x.dtype)).transpose(1, 2).contiguous()
        if pad > 0:
            x = F.pad(x, (0, pad))
        pooled = []
        for conv in self.convs:
            out = F.relu(conv(x))  # (batch, filters, windows)
            windows = (lengths - conv.kernel_size[0] + 1).clamp(min=1)
            valid = valid_positions(windows, out.shape[2])
            pooled.append(out.masked_fill(~valid[:, None, :], float("-inf")).amax(2))
        return torch.cat(pooled, dim=1)

    def sync_config(self) -> None:
        super().sync_config()
        self.config.num_filters = [conv.out_channels for conv in self.convs]

    def for_export(self) -> nn.Module:
        """Always pads by the widest kernel - 1 instead of "as much as a short batch lacks": no branch on
        the sequence length, so an exporter's graph also serves texts shorter than a kernel."""
        return _PaddedTextCNN(self)


class _PaddedTextCNN(nn.Module):
    def __init__(self, model: TextCNN) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        m = self.model
        feats = m._pooled(m.embedding(input_ids), attention_mask.bool(), m._widest() - 1)
        return m.classifier(feats)
