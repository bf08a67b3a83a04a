"""Physical surgery: shrink one module in place. These functions know *what* to cut, never *why*.

Every function replaces the module's parameters with new, smaller ones (same dtype, device and
``requires_grad``) and updates the attributes its ``forward`` reads (``out_features``, GPT-2's
``nf``/``nx``, ``embedding_dim``, ``normalized_shape``). Indices are checked before anything changes,
so a bad call leaves the module untouched. Optimizers holding the old parameters must be rebuilt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

# module geometry lives in arch (below criteria and surgery), importable from here as it always was
from prunekit.arch.modules import (  # noqa: F401
    in_dim,
    in_features,
    is_conv1d,
    is_linear,
    is_norm,
    layer_list,
    out_dim,
    out_features,
    rnn_gates,
    rnn_suffixes,
)
from prunekit.arch.sites import check_layers_removable
from prunekit.errors import PrunekitError

Index = Sequence[int] | Tensor


def as_index(idx: Index, size: int, what: str) -> Tensor:
    """Sorted, unique, in-range, non-empty long indices; a clear error otherwise."""
    t = torch.as_tensor(idx, dtype=torch.long).flatten()
    if t.numel() == 0:
        raise PrunekitError(f"{what}: nothing would be kept (an empty width is not a valid layer)")
    if int(t.min()) < 0 or int(t.max()) >= size:
        raise PrunekitError(f"{what}: indices must be in [0, {size}), got {int(t.min())}..{int(t.max())}")
    if t.unique().numel() != t.numel():
        raise PrunekitError(f"{what}: indices must not repeat")
    return t.sort().values


def _swap(module: nn.Module, name: str, value: Tensor) -> None:
    old = getattr(module, name)
    setattr(module, name, nn.Parameter(value.contiguous(), requires_grad=old.requires_grad))


@torch.no_grad()
def keep_out_features(linear: nn.Module, idx: Index) -> nn.Module:
    """Keep only output features ``idx`` (weight rows; Conv1D columns) and their bias entries."""
    if not is_linear(linear):
        raise TypeError(f"keep_out_features needs a Linear or Conv1D, got {type(linear).__name__}")
    dim = out_dim(linear)
    i = as_index(idx, linear.weight.shape[dim], "output features").to(linear.weight.device)
    _swap(linear, "weight", linear.weight.index_select(dim, i))
    if linear.bias is not None:
        _swap(linear, "bias", linear.bias.index_select(0, i))
    if is_conv1d(linear):
        linear.nf = i.numel()
    else:
        linear.out_features = i.numel()
    return linear


@torch.no_grad()
def keep_in_features(linear: nn.Module, idx: Index) -> nn.Module:
    """Keep only input features ``idx`` (weight columns; Conv1D rows). The bias is per output: unchanged."""
    if not is_linear(linear):
        raise TypeError(f"keep_in_features needs a Linear or Conv1D, got {type(linear).__name__}")
    dim = in_dim(linear)
    i = as_index(idx, linear.weight.shape[dim], "input features").to(linear.weight.device)
    _swap(linear, "weight", linear.weight.index_select(dim, i))
    if is_conv1d(linear):
        linear.nx = i.numel()
    else:
        linear.in_features = i.numel()
    return linear


@torch.no_grad()
def keep_embedding_dims(emb: nn.Embedding, idx: Index) -> nn.Embedding:
    """Keep embedding dimensions ``idx`` (columns); the vocabulary is untouched."""
    i = as_index(idx, emb.weight.shape[1], "embedding dims").to(emb.weight.device)
    _swap(emb, "weight", emb.weight.index_select(1, i))
    emb.embedding_dim = i.numel()
    return emb


@torch.no_grad()
def keep_norm(norm: nn.Module, idx: Index) -> nn.Module:
    """Keep channels ``idx`` of a LayerNorm (weight and bias) or an RMSNorm (weight only).

    A norm without affine parameters has nothing to cut, but its ``normalized_shape`` still shrinks.
    """
    size = norm.weight.shape[0] if getattr(norm, "weight", None) is not None else norm.normalized_shape[0]
    i = as_index(idx, size, "norm channels")
    for name in ("weight", "bias"):
        p = getattr(norm, name, None)
        if isinstance(p, Tensor):
            _swap(norm, name, p.index_select(0, i.to(p.device)))
    if hasattr(norm, "normalized_shape"):
        norm.normalized_shape = (i.numel(),)
    return norm


def check_layers_kept(model: nn.Module, keep: Index, n: int) -> None:
    """Keeping fewer than all ``n`` blocks needs a family whose blocks can go (checked before the indices)."""
    if torch.as_tensor(keep, dtype=torch.long).flatten().tolist() != list(range(n)):
        check_layers_removable(model)


def remove_layers(model: nn.Module, keep: Index) -> nn.Module:
    """Keep only blocks ``keep`` (in their order) and renumber them.

    Caches find a block's keys/values by its ``layer_idx``, so every ``layer_idx`` attribute inside a
    kept block is set to its new position; ``config.num_hidden_layers`` and ``config.layer_types``
    (per-layer attention kinds of Qwen2/Mistral-style configs) follow.
    """
    parent, attr, layers = layer_list(model)
    check_layers_kept(model, keep, len(layers))
    i = as_index(keep, len(layers), "layers").tolist()
    setattr(parent, attr, nn.ModuleList([layers[k] for k in i]))
    for new, layer in enumerate(getattr(parent, attr)):
        for sub in layer.modules():
            if isinstance(getattr(sub, "layer_idx", None), int):
                sub.layer_idx = new
    for count_attr in ("n_layers", "num_layers"):  # DistilBERT's Transformer keeps its own count
        if isinstance(getattr(parent, count_attr, None), int):
            setattr(parent, count_attr, len(i))
    config = getattr(model, "config", None)
    if config is not None:
        types = getattr(config, "layer_types", None)
        if types is not None:
            config.layer_types = [types[k] for k in i]
        config.num_hidden_layers = len(i)
    return model


def tied_groups(model: nn.Module) -> list[list[tuple[nn.Module, str]]]:
    """Every parameter shared by several modules (a tied LM head), as ``(module, attr)`` lists."""
    seen: dict[int, list[tuple[nn.Module, str]]] = {}
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            seen.setdefault(id(p), []).append((module, name))
    return [group for group in seen.values() if len(group) > 1]


def retie(groups: list[list[tuple[nn.Module, str]]]) -> None:
    """Make each group share one parameter again after surgery replaced them one by one."""
    for (first, name), *rest in groups:
        shared = getattr(first, name)
        for module, attr in rest:
            if getattr(module, attr).shape != shared.shape:
                raise RuntimeError(f"tied parameters diverged in shape: {tuple(shared.shape)} vs "
                                   f"{tuple(getattr(module, attr).shape)}")
            setattr(module, attr, shared)


@torch.no_grad()
def reshape_blank(module: nn.Module, n_out: int | None = None, n_in: int | None = None) -> nn.Module:
    """Give a Linear/Conv1D new *uninitialised* parameters of the given size.

    Only for loaders: the values are about to be overwritten from a checkpoint, so a module built
    from a config can take the saved (possibly larger) shape without an index to select.
    """
    if not is_linear(module):
        raise TypeError(f"reshape_blank needs a Linear or Conv1D, got {type(module).__name__}")
    n_out = out_features(module) if n_out is None else n_out
    n_in = in_features(module) if n_in is None else n_in
    shape = (n_in, n_out) if is_conv1d(module) else (n_out, n_in)
    w = module.weight
    _swap(module, "weight", torch.empty(shape, dtype=w.dtype, device=w.device))
    if module.bias is not None:
        _swap(module, "bias", torch.zeros(n_out, dtype=module.bias.dtype, device=module.bias.device))
    if is_conv1d(module):
        module.nf, module.nx = n_out, n_in
    else:
        module.out_features, module.in_features = n_out, n_in
    return module


# ----------------------------------------------------------------------------------------------
# Recurrent layers and 1-D convolutions
# ----------------------------------------------------------------------------------------------

def _gate_rows(keep: Tensor, hidden: int, gates: int) -> Tensor:
    """Rows of units ``keep`` in every gate block (gate g of unit j is row g·hidden + j)."""
    return torch.cat([g * hidden + keep for g in range(gates)])


def _concat_dirs(keep: Sequence[Tensor], hidden: int) -> Tensor:
    """Feature indices of kept units in a [forward | reverse] concatenated output of width dirs·hidden."""
    return torch.cat([d * hidden + k for d, k in enumerate(keep)])


@torch.no_grad()
def keep_rnn_units(rnn: nn.RNNBase, keep: Mapping[tuple[int, int], Index]) -> nn.RNNBase:
    """Keep hidden units ``keep[(layer, direction)]`` of an LSTM/GRU/RNN, every gate of a unit together.

    Per layer and direction: the unit's rows of ``weight_ih``/``weight_hh``/biases in every gate block
    and its ``weight_hh`` column; a layer above also loses the matching input columns of the layer
    below's [forward | reverse] output. One module has one ``hidden_size``, so every layer and
    direction must keep the same number of units (which units may differ). Returns the module; what
    reads its output must drop the matching [forward | reverse] features (see :mod:`prunekit.prune.textnets`).
    """
    if getattr(rnn, "proj_size", 0):
        raise PrunekitError("keep_rnn_units: LSTMs with proj_size are not supported")
    h, gates, dirs = rnn.hidden_size, rnn_gates(rnn), len(rnn_suffixes(rnn))
    want = {(layer, d) for layer in range(rnn.num_layers) for d in range(dirs)}
    if set(keep) != want:
        raise PrunekitError(f"keep_rnn_units needs kept units for every (layer, direction) {sorted(want)}")
    idx = {key: as_index(v, h, f"layer {key[0]} direction {key[1]}: hidden units") for key, v in keep.items()}
    counts = {len(v) for v in idx.values()}
    if len(counts) > 1:
        raise PrunekitError(f"every layer and direction of one {type(rnn).__name__} must keep the same number of "
                            f"units (one hidden_size), got {sorted(counts)}")
    device = rnn.weight_ih_l0.device
    for layer in range(rnn.num_layers):
        below = _concat_dirs([idx[(layer - 1, d)] for d in range(dirs)], h).to(device) if layer else None
        for d, sfx in enumerate(rnn_suffixes(rnn)):
            k = idx[(layer, d)].to(device)
            rows = _gate_rows(k, h, gates)
            w_ih = getattr(rnn, f"weight_ih_l{layer}{sfx}").index_select(0, rows)
            _swap(rnn, f"weight_ih_l{layer}{sfx}", w_ih if below is None else w_ih.index_select(1, below))
            w_hh = getattr(rnn, f"weight_hh_l{layer}{sfx}").index_select(0, rows).index_select(1, k)
            _swap(rnn, f"weight_hh_l{layer}{sfx}", w_hh)
            if rnn.bias:
                for b in ("bias_ih", "bias_hh"):
                    _swap(rnn, f"{b}_l{layer}{sfx}", getattr(rnn, f"{b}_l{layer}{sfx}").index_select(0, rows))
    rnn.hidden_size = counts.pop()
    rnn.flatten_parameters()
    return rnn


@torch.no_grad()
def keep_rnn_inputs(rnn: nn.RNNBase, idx: Index) -> nn.RNNBase:
    """Keep input features ``idx`` of the first layer (``weight_ih_l0`` columns, every direction)."""
    i = as_index(idx, rnn.input_size, "recurrent input features").to(rnn.weight_ih_l0.device)
    for sfx in rnn_suffixes(rnn):
        _swap(rnn, f"weight_ih_l0{sfx}", getattr(rnn, f"weight_ih_l0{sfx}").index_select(1, i))
    rnn.input_size = i.numel()
    rnn.flatten_parameters()
    return rnn


@torch.no_grad()
def keep_conv_out_channels(conv: nn.Conv1d, idx: Index) -> nn.Conv1d:
    """Keep filters ``idx`` of a Conv1d (weight rows and bias)."""
    i = as_index(idx, conv.out_channels, "conv filters").to(conv.weight.device)
    _swap(conv, "weight", conv.weight.index_select(0, i))
    if conv.bias is not None:
        _swap(conv, "bias", conv.bias.index_select(0, i))
    conv.out_channels = i.numel()
    return conv


@torch.no_grad()
def keep_conv_in_channels(conv: nn.Conv1d, idx: Index) -> nn.Conv1d:
    """Keep input channels ``idx`` of an ungrouped Conv1d."""
    if conv.groups != 1:
        raise PrunekitError("keep_conv_in_channels: grouped convolutions are not supported")
    i = as_index(idx, conv.in_channels, "conv input channels").to(conv.weight.device)
    _swap(conv, "weight", conv.weight.index_select(1, i))
    conv.in_channels = i.numel()
    return conv
