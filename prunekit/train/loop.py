"""The recovery/fine-tuning loop, on `accelerate` so `accelerate launch` scales it out unchanged.

Pruning plugs in through three hooks, so training never knows why weights are removed:
``masks`` are re-applied after every optimizer step, ``importance`` sees every gradient, and
``on_step`` may install new masks (gradual schedule) or stop the run (quality checkpoints).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from prunekit.errors import PrunekitError
from prunekit.importance import Importance
from prunekit.prune import MaskSet
from prunekit.runtime import accelerator, log
from prunekit.tasks import Task, get_task
from prunekit.tasks.base import EncodedSplit
from prunekit.train import lora
from prunekit.train.checkpoint import ExtraState, Saved, active_call, rng_state, set_rng_state
from prunekit.train.distill import DistillConfig, Distiller, check_teacher, eager_attention
from prunekit.train.lora import LoraOptions


@dataclass
class TrainConfig:
    epochs: float = 1.0
    lr: float = 5e-5
    batch_size: int = 32
    weight_decay: float = 0.01
    warmup: float = 0.06
    max_grad_norm: float = 1.0
    seed: int = 0
    lora: LoraOptions | None = None  # train LoRA adapters instead of the weights, merged sparse at the end


@dataclass
class TrainResult:
    steps: int
    seconds: float
    loss: float
    stopped: bool = False
    lora: dict | None = None  # with cfg.lora: rank, alpha, trainable_params, sparsity_after_merge


#: on_step(step, total_steps, optimizer) -> True to stop training
StepHook = Callable[[int, int, torch.optim.Optimizer], bool | None]


def train(
    model: nn.Module,
    data: EncodedSplit,
    tokenizer: PreTrainedTokenizerBase,
    cfg: TrainConfig,
    *,
    masks: MaskSet | None = None,
    importance: Importance | None = None,
    on_step: StepHook | None = None,
    teacher: nn.Module | None = None,
    distill: DistillConfig | None = None,
    desc: str = "fine-tune",
    extra_state: ExtraState | None = None,
    task: Task | str = "classification",
) -> TrainResult:
    """Fine-tune ``model`` in place for ``cfg.epochs`` (fractions allowed) of ``data``.

    With a ``teacher``, the loss is the distillation loss (:mod:`prunekit.train.distill`); hidden-state
    and attention terms add a :class:`~prunekit.train.distill.Distiller` whose projections train too.
    Inside :func:`~prunekit.train.checkpoint.resumable` the run checkpoints and resumes; ``extra_state``
    is the caller's own state that ``on_step`` changes (saved and restored with the rest). The ``task``
    (a :class:`~prunekit.tasks.base.Task` or its name) batches the data and gives the losses.
    With ``cfg.lora`` only LoRA adapters (and a classifier's head) train; they are merged at the end with
    the masks applied (:mod:`prunekit.train.lora`), so the sparsity stays exact."""
    task = get_task(task)
    if cfg.lora is not None and importance is not None and importance.uses_gradients:
        raise PrunekitError("--lora freezes the weights, so a criterion scored during training (movement, "
                            "Taylor) cannot see them; use --schedule oneshot/iterative or drop --lora")
    distiller = None
    if teacher is not None:
        check_teacher(model, teacher)
        distill = (distill or DistillConfig()).validate()
        if distill.intermediate:
            distiller = Distiller(distill, model, teacher, task.distill_loss)
    adapters = lora.wrap(model, cfg.lora, masks) if cfg.lora is not None and cfg.epochs > 0 else None
    try:
        with eager_attention(*([model, teacher] if teacher is not None else []),
                             needed=bool(distill is not None and distill.attention_weight > 0)):
            result = _train(model, data, tokenizer, cfg, masks=masks, importance=importance, on_step=on_step,
                            teacher=teacher, distill=distill, distiller=distiller, desc=desc,
                            extra_state=extra_state, task=task)
    finally:
        if adapters is not None:  # the caller always gets the plain model back, also after an error
            lora.merge(model, masks)
    if adapters is not None:
        result.lora = adapters.report(masks.sparsity() if masks is not None else None)
    return result


def _train(
    model: nn.Module,
    data: EncodedSplit,
    tokenizer: PreTrainedTokenizerBase,
    cfg: TrainConfig,
    *,
    masks: MaskSet | None,
    importance: Importance | None,
    on_step: StepHook | None,
    teacher: nn.Module | None,
    distill: DistillConfig | None,
    distiller: Distiller | None,
    desc: str,
    extra_state: ExtraState | None,
    task: Task,
) -> TrainResult:
    acc = accelerator()
    start = time.perf_counter()
    loader = task.loader(data, tokenizer, cfg.batch_size, shuffle=True, seed=cfg.seed)
    order = loader.sampler.generator  # the data order: saved at each epoch's start, for resuming mid-epoch
    total = max(1, math.ceil(cfg.epochs * len(loader)))
    if cfg.epochs <= 0:
        return TrainResult(steps=0, seconds=0.0, loss=float("nan"))
    ckpt = active_call(desc)
    latest = ckpt.latest() if ckpt is not None else None
    parts = {"model": model, "distiller": distiller}
    if latest is not None and latest[0]:  # finished before the kill: its final state, no training
        saved = ckpt.load(latest[1], parts, acc.device)
        _restore(saved, masks, importance, extra_state)
        set_rng_state(saved.state["rng"])
        log(f"{desc}: finished before the interruption ({saved.meta['steps']} steps), loaded from the checkpoint")
        model.eval()
        return TrainResult(steps=saved.meta["steps"], seconds=saved.meta["seconds"], loss=saved.meta["loss"],
                           stopped=saved.meta["stopped"])
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "norm" not in n.lower()]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim > 1 and "norm" not in n.lower())]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if distiller is not None and any(True for _ in distiller.parameters()):
        groups.append({"params": list(distiller.parameters()), "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup * total), total)
    if distiller is not None and any(True for _ in distiller.parameters()):
        wrapped, distiller, optimizer, loader, scheduler = acc.prepare(model, distiller, optimizer, loader, scheduler)
    else:
        wrapped, optimizer, loader, scheduler = acc.prepare(model, optimizer, loader, scheduler)
        if distiller is not None:
            distiller = distiller.to(acc.device)
    extra = distiller.model_kwargs() if distiller is not None else {}
    if teacher is not None:
        teacher = teacher.to(acc.device).eval()
    tracked = masks.params if masks is not None else {}
    model.train()
    step, running, stopped = 0, float("nan"), False
    epoch, skip, rng = 0, 0, None
    if latest is not None and ckpt.meta(latest[1])["total"] != total:
        log(f"{desc}: the checkpoint is for {ckpt.meta(latest[1])['total']} steps, not {total}; starting over")
    elif latest is not None:  # killed mid-way: continue from the last checkpoint
        saved = ckpt.load(latest[1], parts, acc.device)
        _restore(saved, masks, importance, extra_state)
        optimizer.load_state_dict(saved.state["optimizer"])
        scheduler.load_state_dict(saved.state["scheduler"])
        step, epoch, skip, running = (saved.meta[k] for k in ("step", "epoch", "skip", "running"))
        order.set_state(saved.state["order"])
        rng = saved.state["rng"]
        log(f"{desc}: resuming from step {step} of {total}")
    if rng is not None and not skip:
        set_rng_state(rng)
    bar = tqdm(total=total, initial=step, desc=desc, leave=False, disable=not acc.is_local_main_process,
               **task.progress_bar(data, cfg.batch_size))
    while step < total and not stopped:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        epoch_order = order.get_state()
        for i, batch in enumerate(loader):
            if i < skip:  # resuming mid-epoch: the same order, the batches already trained on skipped
                continue
            if skip:
                skip = 0
                set_rng_state(rng)  # dropout continues as it would have (the skipped batches drew nothing)
            out = wrapped(**batch, **extra)
            if teacher is None:  # a task without labels (embeddings) has no loss of its own: it always distils
                loss = task.loss(out, batch)
            else:
                with torch.no_grad():
                    t_out = teacher(**{k: v for k, v in batch.items() if k != "labels"}, **extra)
                if distiller is not None:
                    loss = distiller(out, t_out, batch["labels"], batch.get("attention_mask"))
                else:
                    loss = task.distill_loss(task.logits(out), task.logits(t_out), task.targets(batch),
                                             distill or DistillConfig())
            acc.backward(loss)
            if importance is not None and importance.uses_gradients:
                importance.accumulate(tracked)
            if cfg.max_grad_norm:
                acc.clip_grad_norm_(wrapped.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if masks is not None:
                masks.apply()
            step += 1
            running = loss.item() if math.isnan(running) else 0.95 * running + 0.05 * loss.item()
            bar.update(1)
            bar.set_postfix(loss=f"{running:.3f}")
            if on_step is not None and on_step(step, total, optimizer):
                stopped = True
            if step >= total or stopped:
                break
            if ckpt is not None and ckpt.due(step):
                at_end = i + 1 == len(loader)  # the next epoch's order starts from the generator as it is now
                ckpt.save(f"{ckpt.prefix}-step-{step:07d}", parts, _tensors(masks, importance, extra_state),
                          {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                           "rng": rng_state(), "order": order.get_state() if at_end else epoch_order},
                          {"step": step, "total": total, "epoch": epoch + at_end, "skip": 0 if at_end else i + 1,
                           "running": running, **_meta(importance, extra_state)})
        epoch += 1
    bar.close()
    if ckpt is not None:
        ckpt.save(f"{ckpt.prefix}-done", parts, _tensors(masks, importance, extra_state), {"rng": rng_state()},
                  {"steps": step, "seconds": time.perf_counter() - start, "loss": running, "stopped": stopped,
                   **_meta(importance, extra_state)})
        ckpt.finished()
    acc.wait_for_everyone()
    # Drop the optimizer's references so its state (2x the model) is freed between stages.
    acc.free_memory()
    model.eval()
    return TrainResult(steps=step, seconds=time.perf_counter() - start, loss=running, stopped=stopped)


def _tensors(masks: MaskSet | None, importance: Importance | None,
             extra_state: ExtraState | None) -> dict[str, dict[str, torch.Tensor]]:
    """What a checkpoint holds beside the weights: masks, importance scores, the caller's tensors."""
    return {"masks": masks.state_dict() if masks is not None else {},
            "importance": dict(importance.state()) if importance is not None else {},
            "caller": extra_state.dump()[1] if extra_state is not None else {}}


def _meta(importance: Importance | None, extra_state: ExtraState | None) -> dict:
    return {"importance_batches": getattr(importance, "batches", None),
            "caller": extra_state.dump()[0] if extra_state is not None else None}


def _restore(saved: Saved, masks: MaskSet | None, importance: Importance | None,
             extra_state: ExtraState | None) -> None:
    """Masks, importance scores and the caller's state as they were at the checkpoint."""
    if masks is not None:
        masks.masks = {n: m.to(masks.params[n].device) for n, m in saved.extra.get("masks", {}).items()}
    if importance is not None:
        importance.reset()
        importance.state().update(saved.extra.get("importance", {}))
        if saved.meta.get("importance_batches") is not None:
            importance.batches = saved.meta["importance_batches"]
    if extra_state is not None:
        extra_state.load(saved.meta["caller"], saved.extra.get("caller", {}))


def calibrate(
    model: nn.Module,
    data: EncodedSplit,
    tokenizer: PreTrainedTokenizerBase,
    importance: Importance,
    params: dict[str, nn.Parameter],
    batches: int,
    batch_size: int = 32,
    seed: int = 0,
    *,
    task: Task | str = "classification",
) -> None:
    """Give a criterion the passes it needs before it can score, on ``batches`` seeded training batches
    (the same for every criterion); weight-only criteria, or ones that already hold statistics, get none.

    - Gradient criteria (Taylor): forward/backward passes, no weight update. They run through the same
      accelerator as training, so with several processes the gradients are averaged before they are
      scored and every rank ranks the same numbers.
    - Activation criteria (Wanda): forward passes; each pruned weight's module reports its inputs to
      ``importance.observe``, padding excluded.
    """
    grads = importance.uses_gradients
    if importance.state() or not (grads or importance.uses_activations):
        return
    task = get_task(task)
    acc = accelerator()
    loader = task.calibration_loader(data, tokenizer, batch_size, seed)
    wrapped, loader = acc.prepare(model, loader)
    current: dict[str, torch.Tensor | None] = {"mask": None}

    def observer(name: str) -> Callable:
        def hook(_module: nn.Module, args: tuple) -> None:
            if args:
                importance.observe(name, args[0], current["mask"])
        return hook

    handles = [] if grads else [m.register_forward_pre_hook(observer(n))
                                for n, m in importance.observed(model, params).items()]
    was_training = model.training
    model.eval()  # no dropout: score the network that will be measured
    try:
        for i, batch in enumerate(tqdm(loader, total=min(batches, len(loader)), desc="calibrate", leave=False,
                                       disable=not acc.is_local_main_process)):
            if i >= batches:
                break
            if grads:
                wrapped.zero_grad(set_to_none=True)
                acc.backward(task.loss(wrapped(**batch), batch))
                importance.accumulate(params)
            else:
                current["mask"] = batch.get("attention_mask")
                with torch.no_grad():
                    wrapped(**{k: v for k, v in batch.items() if k != "labels"})
    finally:
        for h in handles:
            h.remove()
        if grads:
            wrapped.zero_grad(set_to_none=True)
        acc.free_memory()
        model.train(was_training)
