"""Embedding → (multi-layer, bidirectional) LSTM / GRU / plain RNN → max over time → Linear."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

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
