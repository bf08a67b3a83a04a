"""Tiny recurrent and conv text models (built-in and custom) shared by the text-model tests."""

from __future__ import annotations

import torch
from _threads import one_thread  # noqa: F401 - autouse fixture, shared
from torch import nn

from prunekit.models import TextNetConfig, build_model

VOCAB = 40
# (model_type, num_layers, bidirectional): every recurrent kind, single and stacked, one and two directions
RECURRENT_CASES = [(t, n, bi) for t in ("lstm", "gru", "rnn") for n in (1, 2) for bi in (False, True)]




def tiny(model_type: str = "lstm", num_layers: int = 1, bidirectional: bool = False, seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    cfg = dict(model_type=model_type, vocab_size=VOCAB, embed_dim=12, hidden_size=10, num_layers=num_layers,
               bidirectional=bidirectional, num_filters=[6, 5, 4], dropout=0.0, num_labels=3)
    cfg.update(kw)
    model = build_model(TextNetConfig(**cfg)).eval()
    with torch.no_grad():  # bigger than the default init, so removing a group visibly moves the logits
        model.classifier.weight.normal_(0, 1.0)
    return model


def batch(seed: int = 1) -> dict[str, torch.Tensor]:
    """Right-padded ids with uneven lengths (including one shorter than the widest conv kernel)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (5, 11), generator=gen)
    lengths = torch.tensor([11, 7, 3, 9, 1])
    mask = (torch.arange(11)[None] < lengths[:, None]).long()
    return {"input_ids": ids * mask, "attention_mask": mask}


class StackedRNN(nn.Module):
    """A user's own module: two separate recurrent modules (GRU then bidirectional LSTM) on one embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 12)
        self.first = nn.GRU(12, 9, batch_first=True)
        self.second = nn.LSTM(9, 7, batch_first=True, bidirectional=True)
        self.drop = nn.Dropout(0.0)
        self.out = nn.Linear(14, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x, _ = self.first(self.emb(ids))
        x, _ = self.second(x)
        return self.out(self.drop(x.mean(1)))


class UserCNN(nn.Module):
    """A user's own TextCNN without prunekit's masking: two kernel widths, mean over time."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 12)
        self.convs = nn.ModuleList([nn.Conv1d(12, 8, 2), nn.Conv1d(12, 6, 3)])
        self.fc = nn.Linear(14, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids).transpose(1, 2)
        return self.fc(torch.cat([torch.relu(c(x)).amax(2) for c in self.convs], 1))


class WithNorm(StackedRNN):
    """Not traceable: a LayerNorm between the recurrent stack and the classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(14)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x, _ = self.first(self.emb(ids))
        x, _ = self.second(x)
        return self.out(self.norm(x.mean(1)))


class UserGRU(nn.Module):
    """A user's module as `prunekit finetune --module _textnet_zoo:UserGRU` builds it: its constructor takes
    vocab_size and num_labels (prunekit fills them in) and its forward an optional attention mask."""

    def __init__(self, vocab_size: int, num_labels: int, embed_dim: int = 16, hidden: int = 12) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.gru = nn.GRU(embed_dim, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, num_labels)

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        x, _ = self.gru(self.emb(ids))
        m = torch.ones_like(ids) if attention_mask is None else attention_mask
        m = m[..., None].to(x.dtype)
        return self.head((x * m).sum(1) / m.sum(1).clamp(min=1))


class UserGRUWithNorm(UserGRU):
    """Not traceable through the CLI: a LayerNorm before the classifier."""

    def __init__(self, vocab_size: int, num_labels: int, **kw) -> None:
        super().__init__(vocab_size, num_labels, **kw)
        self.norm = nn.LayerNorm(self.head.in_features)

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        x, _ = self.gru(self.emb(ids))
        return self.head(self.norm(x.mean(1)))
