"""LoRA recovery that keeps the sparsity exact.

A dense adapter merged into a pruned layer refills every pruned weight, so the merge here applies the
layer's mask to the update (W <- W + scale * BA * M): a 50 % or 2:4 model stays exactly 50 % / 2:4.
The adapters go on the prunable Linear/Conv1D layers (the ones masks cover) through ``peft``; the base
weights are frozen, a classifier's head stays trainable, and :func:`merge` returns the plain
transformers model, so saving and reloading see the same module names as without LoRA.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from prunekit.arch.families import prunable_modules
from prunekit.arch.textnets import is_text_model
from prunekit.errors import PrunekitError
from prunekit.prune import MaskSet

ADAPTER = "default"


@dataclass(frozen=True)
class LoraOptions:
    """``rank`` R of the update BA; ``alpha`` scales it by alpha / R (default 2R); ``dropout`` on its input."""

    rank: int
    alpha: float | None = None
    dropout: float = 0.05

    def validate(self) -> LoraOptions:
        if not isinstance(self.rank, int) or self.rank < 1:
            raise PrunekitError(f"--lora needs a positive integer rank, not {self.rank!r}")
        if self.alpha is not None and self.alpha <= 0:
            raise PrunekitError(f"--lora-alpha must be positive, not {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise PrunekitError(f"--lora-dropout must be in [0, 1), not {self.dropout}")
        return self

    @property
    def scale_alpha(self) -> float:
        return float(self.alpha if self.alpha is not None else 2 * self.rank)


def lora_targets(model: nn.Module, masks: MaskSet | None = None) -> dict[str, nn.Module]:
    """The layers that get adapters: the masked ones, else every prunable Linear (structured models)."""
    if is_text_model(model):
        raise PrunekitError(f"--lora: peft cannot wrap {type(model).__name__}'s recurrent/conv layers; "
                            "use full recovery (drop --lora) for LSTM/GRU/CNN text models")
    modules = dict(model.named_modules())
    if masks is not None and masks.params:
        chosen = {n: modules[n] for n in masks.params if n in modules}
    else:
        try:
            chosen = prunable_modules(model)
        except PrunekitError as err:
            raise PrunekitError(f"--lora: nothing to adapt ({err})") from err
    if not chosen:
        raise PrunekitError("--lora: nothing to adapt (no prunable Linear layer in this model)")
    return chosen


def head_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """A task head's parameters (outside the base model), which train in full; an LM's output embedding does not."""
    prefix = getattr(model, "base_model_prefix", "")
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tied = {id(p) for p in out.parameters()} if out is not None else set()
    if not prefix or not hasattr(model, prefix):
        return {}
    return {n: p for n, p in model.named_parameters()
            if not n.startswith(prefix + ".") and id(p) not in tied}


@dataclass
class LoraRun:
    """What :func:`wrap` did, for :func:`merge` and the report."""

    options: LoraOptions
    targets: list[str]
    trainable_params: int

    def report(self, sparsity_after_merge: float | None) -> dict:
        opts = asdict(self.options) | {"alpha": self.options.scale_alpha}
        return {**opts, "layers": len(self.targets), "trainable_params": self.trainable_params,
                "sparsity_after_merge": sparsity_after_merge}


def wrap(model: nn.Module, options: LoraOptions, masks: MaskSet | None = None) -> LoraRun:
    """Put LoRA adapters on the prunable layers in place and freeze everything but them and the head."""
    from peft import LoraConfig, inject_adapter_in_model

    options = options.validate()
    targets = lora_targets(model, masks)
    for name, module in targets.items():
        if options.rank > min(module.weight.shape):
            raise PrunekitError(f"--lora {options.rank} is larger than layer {name} allows "
                                f"(min(in, out) = {min(module.weight.shape)})")
    head = head_parameters(model)
    for p in model.parameters():
        p.requires_grad_(False)
    config = LoraConfig(r=options.rank, lora_alpha=options.scale_alpha, lora_dropout=options.dropout,
                        target_modules=sorted(targets), bias="none",
                        fan_in_fan_out=any(type(m).__name__ == "Conv1D" for m in targets.values()))
    try:
        inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    except (ValueError, TypeError) as err:
        raise PrunekitError(f"--lora: peft cannot wrap {type(model).__name__}: {err}") from err
    for p in head.values():
        p.requires_grad_(True)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return LoraRun(options, sorted(targets), trainable)


@torch.no_grad()
def merge(model: nn.Module, masks: MaskSet | None = None) -> nn.Module:
    """Fold every adapter into its base weight, masked by the layer's mask, and put the plain layer back."""
    from peft.tuners.lora import LoraLayer

    wrapped = [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer)]
    for name, layer in wrapped:
        base = layer.get_base_layer()
        delta = layer.get_delta_weight(ADAPTER).to(base.weight.dtype)
        mask = masks.masks.get(name) if masks is not None else None
        if mask is not None:
            delta = delta.masked_fill(~mask.to(delta.device), 0.0)
        base.weight.add_(delta)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, base)
    for p in model.parameters():
        p.requires_grad_(True)
    if masks is not None:
        masks.apply()  # -0.0 and rounding: the pruned weights are exactly zero, bit for bit
    return model
