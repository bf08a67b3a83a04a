"""Groups: which slices of which parameters belong together (for scores and masks)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from prunekit.prune.structured.sites import attn_site, ffn_site, hidden_sites, num_layers
from prunekit.prune.surgery import in_dim, out_dim


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
