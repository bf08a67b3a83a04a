"""Blocks found from the model itself, for families the table has no entry for.

Unstructured and one-shot pruning need only the repeated blocks and the Linear (or GPT-2 Conv1D)
layers inside them, and every Hugging Face text model keeps its blocks in an ``nn.ModuleList`` of
modules of one class. So a model without an entry in :data:`prunekit.arch.families.FAMILIES` still
prunes: its *stacks* are the outermost such lists whose blocks hold Linears. A decoder or encoder has
one; an encoder–decoder (T5, BART) has two, and ``transformer_layers`` (one-shot calibration runs one
stack at a time) names the longest, the first on a tie (the encoder).
The table entry only adds what structured surgery needs (where q/k/v/o, the FFN and norms live).
"""

from __future__ import annotations

from torch import nn

from prunekit.errors import PrunekitError


def is_linear(module: nn.Module) -> bool:
    """A Linear, or transformers' Conv1D (GPT-2: a Linear with a transposed weight)."""
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def _is_stack(modules: nn.ModuleList) -> bool:
    """Blocks of one class holding at least one Linear each (a list of unlike parts is no stack)."""
    if not len(modules) or len({type(m) for m in modules}) != 1:
        return False
    return all(any(is_linear(m) for m in block.modules()) for block in modules)


def block_stacks(model: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    """Qualified name and list of every outermost stack of like blocks holding Linears, in model order.

    Lists nested inside a stack's blocks (T5's per-block sublayers, older MoE expert lists) belong to
    that stack. An empty result means the model has no repeated blocks prunekit can recognise.
    """
    stacks: list[tuple[str, nn.ModuleList]] = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or any(name.startswith(s + ".") for s, _ in stacks):
            continue
        if _is_stack(module):
            stacks.append((name, module))
    return stacks


def discovered_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The longest stack (the first of equally long ones); a clear error if the model has none."""
    stacks = block_stacks(model)
    if not stacks:
        model_type = getattr(getattr(model, "config", None), "model_type", None) or type(model).__name__
        raise PrunekitError(
            f"{model_type}: no repeated block list (an nn.ModuleList of like modules holding Linear layers) "
            "was found, and prunekit/arch/families.py has no entry for it; pass --prunable REGEX to choose "
            "the Linear layers for unstructured pruning"
        )
    return max(stacks, key=lambda s: len(s[1]))


def _parent(name: str) -> str:
    return name.rpartition(".")[0]


def is_router(module: nn.Module, config: object) -> bool:
    """A mixture-of-experts router (one output per expert) or a shared expert's scalar gate: tiny
    Linears whose every weight steers the block, left out of the default prunable set."""
    experts = next((getattr(config, a) for a in ("num_local_experts", "num_experts", "n_routed_experts")
                    if isinstance(getattr(config, a, None), int)), None)
    if experts is None or not isinstance(module, nn.Linear):
        return False
    return module.out_features in (experts, 1)


def block_linears(block: nn.Module, config: object = None) -> list[str]:
    """The block's prunable Linears (routers excluded), in the order the block registers them."""
    return [n for n, m in block.named_modules() if is_linear(m) and not is_router(m, config)]


def discovered_groups(block: nn.Module, config: object = None) -> list[list[str]]:
    """One-shot's sublayer groups without a table entry: attention Linears (under a child named
    ``*attn*``/``*attention*``) first, then each Linear alone in registration order.

    Whether two Linears share an input is not known without the table, and a group of one is always
    correct (sequential calibration just runs the block once more per group); what is lost is speed.
    """
    names = block_linears(block, config)
    attention = [n for n in names if in_attention(n)]
    return [[n] for n in attention] + [[n] for n in names if n not in attention]


def in_attention(name: str) -> bool:
    parts = _parent(name).lower().split(".")
    return any("attn" in p or "attention" in p for p in parts)
