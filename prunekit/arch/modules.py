"""Where a module's parts sit: which weight dimension is an output or an input (Linear vs GPT-2's
``Conv1D``), what counts as a norm, where the block list is, how an RNN's gates and directions are laid out.

Facts about modules, read by criteria (:mod:`prunekit.importance`) and by surgery (:mod:`prunekit.prune`)
alike; neither decides anything here.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from prunekit.arch.families import family_for


def is_conv1d(module: nn.Module) -> bool:
    """transformers' GPT-2 ``Conv1D``: a Linear whose weight is stored transposed as (in, out)."""
    return type(module).__name__ == "Conv1D"


def is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or is_conv1d(module)


def is_norm(module: nn.Module) -> bool:
    """LayerNorm, torch RMSNorm, or an HF RMSNorm (a module with a 1-D ``weight`` and an epsilon)."""
    if isinstance(module, (nn.LayerNorm, getattr(nn, "RMSNorm", nn.LayerNorm))):
        return True
    w = getattr(module, "weight", None)
    return (isinstance(w, Tensor) and w.dim() == 1 and "norm" in type(module).__name__.lower())


def out_dim(module: nn.Module) -> int:
    """The weight dimension that indexes output features (0 for Linear, 1 for Conv1D)."""
    return 1 if is_conv1d(module) else 0


def in_dim(module: nn.Module) -> int:
    return 0 if is_conv1d(module) else 1


def out_features(module: nn.Module) -> int:
    return module.weight.shape[out_dim(module)]


def in_features(module: nn.Module) -> int:
    return module.weight.shape[in_dim(module)]


def layer_list(model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    """(parent module, attribute name, ModuleList) of the transformer blocks, from the arch table."""
    fam = family_for(model)
    base = getattr(model, "base_model", model)
    parent_path, _, attr = fam.layers.rpartition(".")
    parent = base.get_submodule(parent_path) if parent_path else base
    return parent, attr, getattr(parent, attr)


_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def rnn_gates(rnn: nn.RNNBase) -> int:
    """Gate blocks stacked in each weight's rows: LSTM i,f,g,o; GRU r,z,n; plain RNN one."""
    return _GATES[rnn.mode]


def rnn_suffixes(rnn: nn.RNNBase) -> list[str]:
    """Parameter-name suffix per direction: forward, then reverse."""
    return ["", "_reverse"] if rnn.bidirectional else [""]



def skip_layer(layer: nn.Module) -> RemovableHandle:
    """Make a block return its input unchanged (a forward hook), without removing it."""

    def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        hs = args[0] if args else kwargs["hidden_states"]
        if isinstance(output, tuple):
            return (hs, *output[1:])
        return hs

    return layer.register_forward_hook(hook, with_kwargs=True)
