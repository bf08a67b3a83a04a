"""Embedding → (multi-layer, bidirectional) LSTM / GRU / plain RNN → max over time → Linear."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from prunekit.arch.textnets import layer_rnn, rnn_directions
from prunekit.models.base import TextNet, TextNetConfig, masked_max, text_lengths, valid_positions

RNN_CLASSES: dict[str, type[nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class RecurrentClassifier(TextNet):
    """Sequences are packed, so the reverse direction starts at each text's last real token and a
    prediction does not depend on how much padding its batch carries."""

    def __init__(self, config: TextNetConfig) -> None:
        super().__init__(config)
        cls = RNN_CLASSES[config.model_type]
        self.rnn = cls(config.embed_dim, config.hidden_size, num_layers=config.num_layers, batch_first=True,
                       bidirectional=config.bidirectional, dropout=config.dropout if config.num_layers > 1 else 0.0)
        self.classifier = nn.Linear(config.hidden_size * (2 if config.bidirectional else 1), config.num_labels)

    def features(self, x: Tensor, mask: Tensor) -> Tensor:
        lengths = text_lengths(mask)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return masked_max(out, valid_positions(lengths, x.shape[1]))

    def sync_config(self) -> None:
        super().sync_config()
        self.config.hidden_size = self.rnn.hidden_size

    def for_export(self) -> nn.Module:
        """The same logits without packing (ONNX exporters based on torch.export cannot trace packed
        sequences): see :class:`PaddedRecurrent`."""
        return PaddedRecurrent(self)


class PaddedRecurrent(nn.Module):
    """A :class:`RecurrentClassifier`'s eval-mode logits computed on the padded batch, layer by layer and
    direction by direction (one-layer, one-direction copies of the RNN's weights).

    On right-padded input a forward direction reads each text's real tokens before any padding, so its
    outputs at real positions equal the packed run's. A reverse direction must start at each text's *last
    real* token: its input is reversed within each text's length (padding stays in place), run forwards,
    and its outputs put back in order. Max-pooling over real positions then gives the packed model's
    features exactly, up to float rounding."""

    def __init__(self, model: RecurrentClassifier) -> None:
        super().__init__()
        rnn = model.rnn
        self.embedding, self.classifier = model.embedding, model.classifier
        self.layers = nn.ModuleList(nn.ModuleList(layer_rnn(rnn, i, d) for d in range(rnn_directions(rnn)))
                                    for i in range(rnn.num_layers))

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        lengths = text_lengths(attention_mask.bool())
        x = self.embedding(input_ids)
        steps = torch.arange(x.shape[1], device=x.device)[None, :]
        valid = steps < lengths[:, None]
        # position t of a text reads position len-1-t; padding positions read themselves
        order = torch.where(valid, lengths[:, None] - 1 - steps, steps)[..., None]
        for directions in self.layers:
            outs = []
            for d, rnn in enumerate(directions):
                if d == 0:
                    outs.append(rnn(x)[0])
                else:
                    out = rnn(x.gather(1, order.expand(-1, -1, x.shape[2])))[0]
                    outs.append(out.gather(1, order.expand(-1, -1, out.shape[2])))
            x = torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]
        return self.classifier(masked_max(x, valid))
