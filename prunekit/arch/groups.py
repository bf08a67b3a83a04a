"""Groups: which slices of which parameters belong together (for scores and masks).

What a criterion scores (:mod:`prunekit.importance.groups`) and what surgery removes (:mod:`prunekit.prune`):
both read the same definitions, so they live here, below both.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from prunekit.arch.modules import in_dim, out_dim, rnn_gates, rnn_suffixes
from prunekit.arch.sites import attn_site, ffn_site, hidden_sites, num_layers
from prunekit.arch.textnets import TextLayout, text_layout


@dataclass(frozen=True)
class Part:
    """One parameter's share of ``count`` equal groups: group j owns ``offset + j*size ...`` along ``dim``."""

    param: str
    dim: int
    size: int = 1
    offset: int = 0


@dataclass(frozen=True)
class GroupSet:
    """``count`` groups of one kind in one layer (``layer`` is None for the model-wide hidden width)."""

    kind: str
    layer: int | None
    count: int
    parts: tuple[Part, ...]


def _rows(name: str, module: nn.Module, size: int, offset: int = 0) -> list[Part]:
    parts = [Part(f"{name}.weight", out_dim(module), size, offset)]
    if getattr(module, "bias", None) is not None:
        parts.append(Part(f"{name}.bias", 0, size, offset))
    return parts


def _cols(name: str, module: nn.Module, size: int, offset: int = 0) -> list[Part]:
    return [Part(f"{name}.weight", in_dim(module), size, offset)]


@dataclass(frozen=True)
class HeadGroups:
    """A layer's attention groups: per query head, and per key/value head (with all its query heads)."""

    layer: int
    heads: GroupSet
    kv: GroupSet
    per_group: int


def head_groups(model: nn.Module) -> list[HeadGroups]:
    out = []
    for i in range(num_layers(model)):
        s = attn_site(model, i)
        d, g = s.head_dim, s.per_group
        if s.fused:  # GPT-2: [q | k | v] side by side in one Conv1D
            w = s.n_q * d
            qkv = [p for off in (0, w, 2 * w) for p in _rows(s.names["q"], s.q, d, off)]
            heads = GroupSet("heads", i, s.n_q, (*qkv, *_cols(s.names["o"], s.o, d)))
            out.append(HeadGroups(i, heads, heads, 1))
            continue
        q, o = _rows(s.names["q"], s.q, d), _cols(s.names["o"], s.o, d)
        q += [p for name, m in s.extra.items() for p in _rows(name, m, d)]  # DeBERTa's position projections
        kv = _rows(s.names["k"], s.k, d) + _rows(s.names["v"], s.v, d)
        if g == 1:
            heads = GroupSet("heads", i, s.n_q, (*q, *kv, *o))
            out.append(HeadGroups(i, heads, heads, 1))
        else:
            heads = GroupSet("heads", i, s.n_q, (*q, *o))
            groups = GroupSet("kv", i, s.n_kv, (*kv, *_rows(s.names["q"], s.q, g * d),
                                                *_cols(s.names["o"], s.o, g * d)))
            out.append(HeadGroups(i, heads, groups, g))
    return out


def ffn_groups(model: nn.Module) -> list[GroupSet]:
    out = []
    for i in range(num_layers(model)):
        f = ffn_site(model, i)
        parts = _rows(f.names["up"], f.up, 1)
        if f.fused:  # the gate half: neuron j's gate row is width + j
            parts += _rows(f.names["up"], f.up, 1, f.width)
        if f.gate is not None:
            parts += _rows(f.names["gate"], f.gate, 1)
        out.append(GroupSet("ffn", i, f.width, (*parts, *_cols(f.names["down"], f.down, 1))))
    return out


def hidden_groups(model: nn.Module) -> GroupSet:
    s = hidden_sites(model)
    parts: list[Part] = [Part(f"{n}.weight", 1) for n, _ in s.embeddings]
    for n, m in s.norms:
        parts += [Part(f"{n}.{p}", 0) for p in ("weight", "bias") if isinstance(getattr(m, p, None), Tensor)]
    for n, m in s.reads:
        parts += _cols(n, m, 1)
    for n, m in s.writes:
        parts += _rows(n, m, 1)
    return GroupSet("hidden", None, s.size, tuple(parts))


# Text models (LSTM/GRU/RNN, TextCNN): one TextGroup per layer and direction, filter bank or embedding


@dataclass(frozen=True)
class TextGroup:
    """One layer's groups: ``name`` keys scores and plans (``rnn.l0``, ``rnn.l0_reverse``, ``convs.2``,
    ``embedding``); ``module`` is the owning module's name, ``layer``/``direction`` its place in it."""

    name: str
    kind: str
    module: str
    groups: GroupSet
    layer: int = 0
    direction: int = 0

    @property
    def count(self) -> int:
        return self.groups.count


def _readers(layout: TextLayout, index: int) -> list[Part]:
    """Input columns of whatever reads RNN module ``index``'s last layer (offset by direction later)."""
    if index + 1 < len(layout.recurrent):
        name, nxt = layout.recurrent[index + 1]
        return [Part(f"{name}.weight_ih_l0{sfx}", 1) for sfx in rnn_suffixes(nxt)]
    return [Part(f"{layout.classifier[0]}.weight", 1)]


def text_groups(model: nn.Module, layout: TextLayout | None = None) -> list[TextGroup]:
    """Every group of a text model, in data-flow order (embedding, units or filters)."""
    layout = layout or text_layout(model)
    out: list[TextGroup] = []
    ename, emb = layout.embedding
    readers = ([Part(f"{layout.recurrent[0][0]}.weight_ih_l0{sfx}", 1) for sfx in rnn_suffixes(layout.recurrent[0][1])]
               if layout.recurrent else [Part(f"{n}.weight", 1) for n, _ in layout.convs])
    out.append(TextGroup("embedding", "embedding", ename,
                         GroupSet("embedding", None, emb.embedding_dim, (Part(f"{ename}.weight", 1), *readers))))
    for m, (name, rnn) in enumerate(layout.recurrent):
        h, gates, sfxs = rnn.hidden_size, rnn_gates(rnn), rnn_suffixes(rnn)
        for layer in range(rnn.num_layers):
            for d, sfx in enumerate(sfxs):
                own = [f"weight_ih_l{layer}{sfx}", f"weight_hh_l{layer}{sfx}"]
                own += [f"{b}_l{layer}{sfx}" for b in ("bias_ih", "bias_hh")] if rnn.bias else []
                parts = [Part(f"{name}.{p}", 0, 1, g * h) for p in own for g in range(gates)]
                parts.append(Part(f"{name}.weight_hh_l{layer}{sfx}", 1))
                if layer + 1 < rnn.num_layers:
                    parts += [Part(f"{name}.weight_ih_l{layer + 1}{s}", 1, 1, d * h) for s in sfxs]
                else:
                    parts += [Part(p.param, 1, 1, d * h) for p in _readers(layout, m)]
                out.append(TextGroup(f"{name}.l{layer}{sfx}", "units", name,
                                     GroupSet("units", layer, h, tuple(parts)), layer, d))
    offset = 0
    for name, conv in layout.convs:
        parts = [Part(f"{name}.weight", 0)] + ([Part(f"{name}.bias", 0)] if conv.bias is not None else [])
        parts.append(Part(f"{layout.classifier[0]}.weight", 1, 1, offset))
        out.append(TextGroup(name, "filters", name, GroupSet("filters", None, conv.out_channels, tuple(parts))))
        offset += conv.out_channels
    return out
