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
        lengths = text_lengths(mask)
        # (batch, embed, seq), padding exactly zero; contiguous once, not once per conv
        x = (x * mask[..., None].to(x.dtype)).transpose(1, 2).contiguous()
        short = max(conv.kernel_size[0] for conv in self.convs) - x.shape[2]
        if short > 0:
            x = F.pad(x, (0, short))
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
