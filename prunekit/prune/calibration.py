"""Sequential, block-by-block calibration of a decoder LM — how one-shot pruning sees its data.

The calibration windows enter the model once, up to the first transformer block; from then on each
block runs alone on the hidden states the *already pruned* blocks before it produced, so the error
of earlier blocks is what later blocks are calibrated on. Only one block's inputs and outputs are
held at a time, and only the block being worked on needs to be on the accelerator: the others wait
on the ``offload`` device, so a model larger than the accelerator still prunes.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from prunekit.arch import linear_groups, transformer_layers
from prunekit.errors import PrunekitError
from prunekit.importance.base import InputStats  # what a criterion scores from; importable here too

T = TypeVar("T")

#: Calibration windows per forward pass. On 2 CPU cores a SmolLM2-135M block runs fastest at 2-4 windows of
#: 512 tokens (29 ms per window, against 32 at 8 and 36 at 16: larger activations fall out of the cache;
#: bench/calib_batch.py), and the forward pass's transient memory grows with it, so 4 beats 8 on both.
CALIB_BATCH = 4

#: Calibration windows: token ids (n, seq_len), or model inputs by name, each (n, seq_len), when the ids
#: alone do not say what the model saw (a sentence-pair classifier's token_type_ids)
Windows = Tensor | Mapping[str, Tensor]


def as_rows(module: nn.Module, like_weight: Tensor | None = None) -> Tensor:
    """A Linear's weight (or ``like_weight``, a tensor stored as that weight is, e.g. its mask) as (out, in);
    GPT-2's Conv1D stores it transposed."""
    w = module.weight if like_weight is None else like_weight
    return w.t() if type(module).__name__ == "Conv1D" else w


@dataclass
class BlockInputs:
    """What the first block was called with, per calibration batch (hidden states change, the rest not)."""

    hidden: list[Tensor] = field(default_factory=list)
    args: list[tuple] = field(default_factory=list)
    kwargs: list[dict[str, Any]] = field(default_factory=list)


class _Caught(Exception):
    pass


def _move(value: Any, device: torch.device) -> Any:
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(_move(v, device) for v in value)
    if isinstance(value, list):
        return [_move(v, device) for v in value]
    if isinstance(value, dict):
        return {k: _move(v, device) for k, v in value.items()}
    return value


def _move_outside_blocks(model: nn.Module, layers: nn.ModuleList, device: torch.device) -> None:
    """Move every parameter and buffer not inside a block (embeddings, rotary tables, head)."""
    inside = {id(m) for m in layers.modules()}
    for module in model.modules():
        if id(module) in inside:
            continue
        for _, p in module.named_parameters(recurse=False):
            p.data = p.data.to(device)  # in place: tied parameters stay tied
        for name, b in module.named_buffers(recurse=False):
            module._buffers[name] = b.to(device)


@torch.no_grad()
def capture_block_inputs(
    model: nn.Module, windows: Windows, batch_size: int, device: torch.device, offload: torch.device
) -> BlockInputs:
    """Run the windows up to the first block and keep exactly what it receives."""
    _, layers = transformer_layers(model)
    named = {"input_ids": windows} if isinstance(windows, Tensor) else dict(windows)
    n = len(named["input_ids"])
    _move_outside_blocks(model, layers, device)
    captured = BlockInputs()

    def grab(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        if args:
            hidden, rest = args[0], args[1:]
        else:
            kwargs = dict(kwargs)
            hidden, rest = kwargs.pop("hidden_states"), ()
        # Activations are small next to the blocks: they stay on the compute device.
        captured.hidden.append(hidden.detach())
        captured.args.append(rest)
        captured.kwargs.append({k: v for k, v in kwargs.items() if k != "hidden_states"})
        raise _Caught

    handle = layers[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        for i in range(0, n, batch_size):
            with contextlib.suppress(_Caught):
                model(**{k: v[i : i + batch_size].to(device) for k, v in named.items()}, use_cache=False)
    finally:
        handle.remove()
        _move_outside_blocks(model, layers, offload)
    if len(captured.hidden) != (n + batch_size - 1) // batch_size:
        raise PrunekitError("could not capture the first block's inputs (does the model call its blocks in order?)")
    return captured


def run_block(block: nn.Module, inputs: BlockInputs, device: torch.device, *, in_place: bool = False,
              after_batch: Callable[[], None] | None = None) -> list[Tensor]:
    """The block's outputs for every calibration batch (the next block's inputs).

    ``in_place`` replaces each batch's input by its output as soon as it is computed, so only one
    stream of activations is ever held (the caller must not need the inputs afterwards).
    ``after_batch`` runs after each batch's forward pass (e.g. to fold what hooks recorded).
    """
    outs = inputs.hidden if in_place else [None] * len(inputs.hidden)
    with torch.no_grad():
        for i, (hidden, args, kwargs) in enumerate(zip(inputs.hidden, inputs.args, inputs.kwargs, strict=True)):
            out = block(hidden.to(device), *_move(args, device), **_move(kwargs, device))
            out = out[0] if isinstance(out, tuple) else out
            outs[i] = out.detach().to(hidden.device)
            if after_batch is not None:
                after_batch()
    return outs


def run_block_with_stats(block: nn.Module, names: Sequence[str], inputs: BlockInputs, device: torch.device,
                         hessian: bool) -> dict[str, InputStats]:
    """One pass: the named Linears' input statistics *and* the block's outputs (replacing its inputs).

    For a dense stream (statistics of the unpruned model): the block is pruned after this pass, so
    the next block sees what the unpruned block computed, and each block runs once instead of twice.
    """
    stats: dict[str, InputStats] = {}
    owner: dict[str, str] = {}
    seen: dict[str, Tensor] = {}

    def fold() -> None:
        _add_seen(stats, owner, block, names, seen, {}, hessian)
        seen.clear()  # do not hold a batch's activations past its use

    with _recording(block, names, seen, stop=False):
        inputs.hidden = run_block(block, inputs, device, in_place=True, after_batch=fold)
    return stats


@contextlib.contextmanager
def _recording(block: nn.Module, names: Sequence[str], seen: dict[str, Tensor], *, stop: bool) -> Iterator[None]:
    """While inside, the first input each named Linear receives goes into ``seen``; with ``stop`` the
    forward pass is cut short (raises :class:`_Caught`) as soon as every one has been seen."""
    handles = []
    for name in names:

        def hook(_m: nn.Module, a: tuple, name: str = name) -> None:
            seen.setdefault(name, a[0].detach())
            if stop and len(seen) == len(names):
                raise _Caught

        handles.append(block.get_submodule(name).register_forward_pre_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _first_inputs(block: nn.Module, names: Sequence[str], hidden: Tensor, args: tuple, kwargs: dict,
                  device: torch.device) -> dict[str, Tensor]:
    """The inputs each named Linear receives when the block runs on ``hidden``; stops as soon as all are seen."""
    seen: dict[str, Tensor] = {}
    with _recording(block, names, seen, stop=True), torch.no_grad(), contextlib.suppress(_Caught):
        block(hidden.to(device), *_move(args, device), **_move(kwargs, device))
    return seen  # a Linear that never ran is reported by _add_seen


def collect_stats(
    block: nn.Module, names: Sequence[str], inputs: BlockInputs, device: torch.device, hessian: bool,
    dense: tuple[nn.Module, BlockInputs] | None = None,
) -> dict[str, InputStats]:
    """Run the block over the calibration batches, recording the inputs of the named Linears.

    The block stops as soon as every named Linear has seen its input, so collecting q/k/v statistics
    costs almost nothing and only the last group needs most of the block. Linears fed the same tensor
    (q/k/v, gate/up) share one :class:`InputStats` (read-only to pruners): one Hessian, not three. With
    ``dense`` (the unpruned block and the unpruned model's hidden states) the cross term XᵀX_dense is
    recorded too.
    """
    stats: dict[str, InputStats] = {}
    owner: dict[str, str] = {}  # name -> the first name fed the very same tensor (q/k/v, gate/up)
    batches = zip(inputs.hidden, inputs.args, inputs.kwargs, strict=True)
    for b, (hidden, args, kwargs) in enumerate(batches):
        seen = _first_inputs(block, names, hidden, args, kwargs, device)
        ref = _first_inputs(dense[0], names, dense[1].hidden[b], args, kwargs, device) if dense else {}
        _add_seen(stats, owner, block, names, seen, ref, hessian)
    return stats


def _add_seen(stats: dict[str, InputStats], owner: dict[str, str], block: nn.Module, names: Sequence[str],
              seen: dict[str, Tensor], ref: dict[str, Tensor], hessian: bool) -> None:
    """Add one batch's inputs; on the first batch decide which Linears share a tensor (and so statistics)."""
    missing = sorted(set(names) - set(seen))
    if missing:
        raise PrunekitError(f"calibration: {missing} never ran in the block's forward pass")
    if not stats:
        for name in names:
            owner[name] = next(n for n in names if _same(seen[n], seen[name]))
            stats[name] = stats[owner[name]] if owner[name] != name else InputStats(
                as_rows(block.get_submodule(name)).shape[1], hessian)
    for name in names:
        if owner[name] == name:
            stats[name].add(seen[name], ref.get(name))
        elif not _same(seen[name], seen[owner[name]]):
            raise PrunekitError(f"calibration: {name} and {owner[name]} shared an input once but not always")


def _same(a: Tensor, b: Tensor) -> bool:
    """Whether two Linears were handed the same activation (then one set of statistics serves both)."""
    return a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()


sublayer_groups = linear_groups  # the name one-shot pruning and its tests import


Pruner = Callable[[int, str, nn.Module, InputStats], None]


def sequential(
    model: nn.Module,
    windows: Windows,
    prune_linear: Pruner,
    *,
    hessian: bool,
    true_sequential: bool = True,
    dense_targets: bool = False,
    stream: str = "pruned",
    batch_size: int = CALIB_BATCH,
    device: torch.device | None = None,
    offload: torch.device | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Calibrate and prune block by block: ``prune_linear(block_index, name, module, stats)`` changes
    each Linear in place.

    ``true_sequential`` re-collects statistics after each sublayer group, so o_proj is calibrated on
    the outputs of the already-pruned q/k/v and down_proj on the pruned gate/up (one extra block pass
    per group); otherwise every Linear of a block sees the block's dense activations.

    ``dense_targets`` also runs an unpruned copy of each block on the unpruned model's hidden states, so
    a pruner can aim at what the *dense* model computes (XᵀX_dense in the stats) rather than at what
    the pruned layer would compute on already-distorted inputs: earlier blocks' error gets corrected,
    not just carried along. It costs a second stream of activations and about twice the block passes.

    ``stream="dense"`` calibrates every block on the *unpruned* model's activations instead: each block
    runs once (statistics and outputs in the same pass) and is pruned afterwards, half the passes of
    the pruned stream; ``true_sequential`` and ``dense_targets`` then have nothing to act on.
    """
    if stream not in ("pruned", "dense"):
        raise PrunekitError(f"calibration stream must be pruned or dense, got {stream!r}")
    device = device or next(model.parameters()).device
    offload = offload or torch.device("cpu")
    _, layers = transformer_layers(model)
    inputs = capture_block_inputs(model, windows, batch_size, device, offload)
    dense_inputs = BlockInputs(list(inputs.hidden), inputs.args, inputs.kwargs) if dense_targets else None
    for index, block in enumerate(layers):
        block.to(device)
        if stream == "dense":  # statistics and outputs in one pass; prune afterwards
            names = [n for g in sublayer_groups(model, block) for n in g]
            stats = run_block_with_stats(block, names, inputs, device, hessian)
            for name in names:
                prune_linear(index, name, block.get_submodule(name), stats.pop(name))
        else:  # statistics per sublayer group (or all at once), prune, then the pruned block's outputs
            original = copy.deepcopy(block) if dense_inputs is not None else None
            groups = sublayer_groups(model, block)
            if not true_sequential:
                groups = [[n for g in groups for n in g]]
            for group in groups:
                dense = (original, dense_inputs) if original is not None else None
                stats = collect_stats(block, group, inputs, device, hessian, dense)
                for name in group:
                    prune_linear(index, name, block.get_submodule(name), stats.pop(name))
            if index < len(layers) - 1:  # the last block's outputs feed nothing
                inputs.hidden = run_block(block, inputs, device, in_place=True)
                if original is not None:
                    dense_inputs.hidden = run_block(original, dense_inputs, device, in_place=True)
            del original
        block.to(offload)
        if progress is not None:
            progress(index + 1, len(layers))


def per_block_statistic(
    model: nn.Module, windows: Windows, statistic: Callable[[list[nn.Module], list[InputStats]], T], *,
    batch_size: int = CALIB_BATCH, device: torch.device | None = None, offload: torch.device | None = None,
) -> list[T]:
    """Per block, ``statistic(linears, their input stats)`` on the dense model's activations (no pruning:
    one pass per block). Only the statistic per block is kept, so memory stays at one block's scores, not a
    copy of the model.
    """
    device = device or next(model.parameters()).device
    offload = offload or torch.device("cpu")
    _, layers = transformer_layers(model)
    inputs = capture_block_inputs(model, windows, batch_size, device, offload)
    out = []
    for index, block in enumerate(layers):
        block.to(device)
        names = [n for g in sublayer_groups(model, block) for n in g]
        if index < len(layers) - 1:  # statistics and outputs in one pass (nothing is pruned in between)
            stats = run_block_with_stats(block, names, inputs, device, hessian=False)
        else:
            stats = collect_stats(block, names, inputs, device, hessian=False)
        out.append(statistic([block.get_submodule(n) for n in names], [stats[n] for n in names]))
        block.to(offload)
    return out
