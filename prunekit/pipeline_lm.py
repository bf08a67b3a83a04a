"""Decoder language models: evaluate perplexity, prune once with calibration data, recover, save, report.

The LM runner of the loop: the one-shot step (SparseGPT/Wanda with sequential calibration, or structured
cuts with least-squares reconstruction) is its own, the rest is the loop's: the task
(:class:`~prunekit.tasks.lm.LMTask`) gives the windows, loss, distillation loss and perplexity, and
recovery (``--finetune-tokens``/``--finetune-epochs``) trains through :func:`prunekit.train.train`, masks
re-applied after every step so unstructured and N:M sparsity stay exact. Quality is perplexity on text
that calibration and recovery never saw. Without recovery the results are those of the one-shot prune.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from prunekit.config import changed, lora_options, refuse
from prunekit.errors import PrunekitError
from prunekit.io.atomic import atomic_output_dir, check_output_dir, check_outside_inputs
from prunekit.io.hf import load_causal_lm
from prunekit.io.shapes import PACKED_WEIGHTS, load, save_sparse, write_pruned
from prunekit.prune.masks import MaskSet
from prunekit.prune.oneshot import OneShotSettings, check_patterns, prune_oneshot
from prunekit.prune.reconstruct import calibrated_scores, plan_lm, reconstruct
from prunekit.prune.structured import GroupScores, StructuredPlan, apply_plan
from prunekit.report.measure import (
    PeakMemory,
    StageLatency,
    Timer,
    bert_like_inputs,
    macs_per_token,
    model_device,
    model_timer,
    speedup,
    stage_record,
)
from prunekit.report.render import package_versions, print_stage_table, write_report
from prunekit.report.zeroshot import zero_shot_scores
from prunekit.runtime import default_device, seed_everything
from prunekit.search.plan import check_plan, mean_sparsity, oneshot_ratios, read_plan
from prunekit.tasks.lm import (
    LMTask,
    LMText,
    LMWindows,
    calibration_windows,
    check_disjoint,
    epochs_for_tokens,
    evaluation_windows,
    load_lm_text,
    perplexity,
    tokens_seen,
    training_windows,
)
from prunekit.train import DistillConfig, TrainConfig, train
from prunekit.train.evals import MetricCheckpoints

SAVE_FORMATS = ("packed", "dense")


def _log(msg: str) -> None:
    import sys

    print(f"[prunekit] {msg}", file=sys.stderr, flush=True)


def evaluate_lm(
    model: str, data: str, *, seq_len: int = 512, eval_samples: int | None = 32, stride: int | None = None,
    calib_data: str | None = None, trust_remote_code: bool = False, zero_shot: str | list[str] | None = None,
    zero_shot_limit: int | None = None, lm_eval_include: list[str] | None = None, zero_shot_online: bool = False,
    zero_shot_batch_size: int = 8, out: str | Path | None = None,
) -> dict[str, Any]:
    """Perplexity of a causal LM on the evaluation part of ``data`` (see :mod:`prunekit.tasks.lm`); with
    ``zero_shot`` (lm-eval task names) also its zero-shot accuracies under ``zero_shot`` (see
    :func:`prunekit.report.zeroshot.zero_shot_scores`). ``out`` writes report.json, report.md and the plot."""
    lm, tokenizer = load_causal_lm(model, trust_remote_code)
    text = load_lm_text(tokenizer, data, calib_data)
    windows = evaluation_windows(text, seq_len, eval_samples, stride)
    result = perplexity(lm.to(default_device()), windows, stride)
    result = {**result, "seq_len": seq_len, "stride": stride or seq_len, "split_rule": text.split_rule}
    if zero_shot:
        result["zero_shot"] = ZeroShot(zero_shot, zero_shot_limit, lm_eval_include, zero_shot_online,
                                       zero_shot_batch_size).score(lm, tokenizer)
    if out is not None:
        write_report(out, {"command": "evaluate", "model": model, "data": data, **result,
                           "versions": package_versions()})
    return result


def _file_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


def prune_lm(
    model: str, data: str, out: str | Path, settings: OneShotSettings | None = None, *,
    calib_samples: int = 128, seq_len: int = 512, eval_samples: int | None = 32, stride: int | None = None,
    calib_data: str | None = None, save: str = "packed", seed: int = 0, force: bool = False,
    trust_remote_code: bool = False, structured: StructuredLM | None = None, baseline: dict[str, Any] | None = None,
    plan: dict[str, Any] | None = None, recovery: LMRecovery | None = None, zero_shot: ZeroShot | None = None,
) -> dict[str, Any]:
    """Evaluate → prune once (calibrated) → evaluate → save, with a report; never touches ``model``.

    ``settings`` drives unstructured / N:M pruning; ``structured`` (heads, FFN neurons, whole blocks)
    removes groups physically instead, with least-squares reconstruction (:mod:`prunekit.prune.reconstruct`).
    ``baseline``: the dense model's :func:`perplexity` result on the same windows, if already measured
    (benchmarks pruning one model many ways); it is then not measured again. ``plan``: a per-block plan
    from ``prunekit search`` (its ``block_sparsity`` already in ``settings.block_ratios``), checked against
    the model's architecture before any work. ``recovery``: train the pruned model on the training text
    (disjoint from the evaluation text, measured) for a number of tokens or epochs, optionally distilling
    from the unpruned model; the report then gains a ``final`` stage and the recovery's record.
    ``zero_shot``: lm-eval tasks scored on the dense and the final model (report key ``zero_shot_stages``).
    """
    settings = settings or OneShotSettings()
    settings.check()
    if recovery is not None:
        recovery.check()
    if structured is not None:
        structured.check()
        save = "structured"
    elif save not in SAVE_FORMATS:
        raise PrunekitError(f"--save must be one of {', '.join(SAVE_FORMATS)}, got {save!r}")
    check_output_dir(out, force, inputs={"model": model, "data": data, "calibration data": calib_data})
    seed_everything(seed)
    device = default_device()
    lm, tokenizer = load_causal_lm(model, trust_remote_code)
    if plan is not None:
        check_plan(plan, lm)
    if structured is None:
        check_patterns(lm, settings)
    text = load_lm_text(tokenizer, data, calib_data)
    eval_ids = evaluation_windows(text, seq_len, eval_samples, stride)
    overlap = check_disjoint(text) if recovery is not None else None  # before any work
    needs_calib = structured is not None or settings.uses_calibration
    calib_ids = calibration_windows(text, calib_samples, seq_len, seed) if needs_calib else None
    lm.to(device)

    _log(f"dense: perplexity on {len(eval_ids)} × {seq_len} evaluation tokens")
    dense_ppl = dict(baseline) if baseline is not None else perplexity(lm, eval_ids, stride)
    _log(f"dense: perplexity {dense_ppl['perplexity']:.2f}")
    scored = {"dense": zero_shot.score(lm, tokenizer)} if zero_shot is not None else None
    stages = [stage_record("dense", metrics=dense_ppl, model=lm, seconds=0.0, latency=None,
                           extra={"macs_per_token": macs_per_token(lm)})]

    def progress(what: str, i: int, n: int) -> None:
        if i == n or i % max(1, n // 6) == 0:
            _log(f"{what} {i}/{n}")

    extra: dict[str, Any] = {}
    teacher = copy.deepcopy(lm).eval() if recovery is not None and recovery.distill else None
    if device.type != "cpu":
        lm.to("cpu")  # blocks visit the accelerator one at a time: a model larger than it still prunes
    with PeakMemory() as memory:
        if structured is None:
            result = prune_oneshot(lm, calib_ids, settings, device=device,
                                   progress=lambda w, i, n: progress(f"{settings.method}: {w}", i, n))
            seconds, name = result.seconds, settings.method + (f" {settings.pattern}" if settings.nm else "")
            extra = {"prunable_modules": list(result.layer_sparsity)}
        else:
            seconds, plan, scores = _prune_structured_lm(lm, calib_ids, structured, device, progress)
            name = structured.name
    lm.to(device)
    pruned_ppl = perplexity(lm, eval_ids, stride)
    _log(f"{name}: perplexity {pruned_ppl['perplexity']:.2f} "
         f"({pruned_ppl['perplexity'] / dense_ppl['perplexity']:.2f}× dense), pruned in {seconds:.1f} s")
    stages.append(stage_record(name, metrics=pruned_ppl, model=lm, seconds=seconds, latency=None,
                               extra={**extra, "peak_memory": memory.record(), "macs_per_token": macs_per_token(lm)}))
    final_ppl, recovered = pruned_ppl, None
    if recovery is not None:
        masks = None if structured is not None else _masks_of(lm, result.layer_sparsity)
        recovered = _recover(lm, tokenizer, text, eval_ids, recovery, masks=masks, teacher=teacher, seq_len=seq_len,
                             stride=stride, seed=seed, start=pruned_ppl)
        del teacher
        final_ppl = recovered.pop("metrics")
        ppl = final_ppl["perplexity"]
        _log(f"recovered: perplexity {ppl:.2f} ({ppl / dense_ppl['perplexity']:.2f}× dense) after "
             f"{recovered['tokens']:,} tokens, {recovered['seconds']:.1f} s")
        stages.append(stage_record(
            "final", metrics=final_ppl, model=lm, seconds=recovered["seconds"], latency=None,
            extra={**extra, "note": "after recovery training", "macs_per_token": macs_per_token(lm),
                   "recovery_tokens": recovered["tokens"], "recovery_steps": recovered["steps"]}))
        recovered["overlap"] = overlap
    if scored is not None:
        scored["final"] = zero_shot.score(lm, tokenizer)
        for stage, key in ((stages[0], "dense"), (stages[-1], "final")):
            stage["zero_shot_mean_acc"] = scored[key]["mean_acc"]
    if structured is not None and structured.latency:
        _time_dense_and_pruned(model, trust_remote_code, lm, stages)
    report: dict[str, Any] = {
        "command": "prune --task lm",
        "task": LMTask.name,
        "baseline": dense_ppl,
        "model": {"source": model, "model_type": lm.config.model_type,
                  "params": stages[0]["params_total"]},
        "data": {"source": data, "calibration_data": calib_data, "split_rule": text.split_rule,
                 "calibration_tokens_available": len(text.calibration),
                 "evaluation_tokens_available": len(text.evaluation)},
        "settings": {"calib_samples": calib_samples if calib_ids is not None else 0,
                     "seq_len": seq_len, "eval_samples": len(eval_ids), "stride": stride or seq_len, "save": save,
                     "recovery": asdict(recovery) if recovery is not None else None},
        "seed": seed,
        "versions": package_versions(),
        "stages": stages,
        "speedup": speedup(stages),
        "perplexity": {"dense": dense_ppl["perplexity"], "pruned": pruned_ppl["perplexity"],
                       "ratio": pruned_ppl["perplexity"] / dense_ppl["perplexity"],
                       "final": final_ppl["perplexity"],
                       "final_ratio": final_ppl["perplexity"] / dense_ppl["perplexity"]},
        "final": final_ppl,
        "recovery": recovered,
        "prune_seconds": seconds,
        "peak_memory": {**memory.record(), "model_fp32_bytes": 4 * stages[0]["params_total"]},
        **({"zero_shot_stages": scored} if scored is not None else {}),
    }
    if structured is None:
        report["settings"]["oneshot"] = asdict(settings)
        report["layer_sparsity"] = result.layer_sparsity
        report["block_sparsity_targets"] = result.block_targets
        if result.mlp_targets is not None:  # block_sparsity_targets then holds attention's
            report["mlp_sparsity_targets"] = result.mlp_targets
        report["owl_outlier_ratios"] = result.owl_outlier_ratios
    else:
        report["settings"]["structured"] = asdict(structured)
        report["plan"] = plan.to_dict()
        report["layer_influence"] = scores.layers.tolist() if scores.layers is not None else None
    _save_lm(lm, tokenizer, out, force, save, report, eval_ids[:2])
    return report


#: `prunekit prune` options that only --task lm reads: a classifier run refuses them
LM_ONLY_OPTIONS = ("pattern", "calib_samples", "seq_len", "eval_samples", "stride", "calib_data", "layer_ratios",
                   "calibration", "refit", "reconstruct", "save", "finetune_tokens", "eval_every", "zero_shot",
                   "zero_shot_limit", "lm_eval_include", "zero_shot_online")
#: options --task lm shares with classifiers, whose CLI defaults are the classifier's: passed on only when
#: given (an LM prune without them does not train)
LM_SHARED_OPTIONS = ("finetune_epochs", "lr", "batch_size", "distill", "distill_alpha", "temperature", "schedule",
                     "lora", "lora_alpha", "lora_dropout")


def prune_lm_from_options(
    model: str, data: str, out: str | Path, *, method: str | None = None, sparsity: float | None = None,
    pattern: str | None = None, layer_ratios: str = "uniform", refit: bool | None = None,
    calibration: str | None = None, damp: float | None = None, heads: float = 0.0, ffn: float = 0.0,
    layers: int = 0, round_to: int = 1, reconstruct: bool = True, latency: bool = True, plan: str | None = None,
    calib_samples: int = 128, seq_len: int = 512, eval_samples: int | None = 32, stride: int | None = None,
    calib_data: str | None = None, save: str = "packed", seed: int = 0, force: bool = False,
    trust_remote_code: bool = False, finetune_tokens: int | None = None, finetune_epochs: float | None = None,
    lr: float | None = None, batch_size: int = 4, distill: bool = False, distill_alpha: float = 0.5,
    temperature: float = 2.0, eval_every: int = 0, schedule: str = "oneshot", lora: int | None = None,
    lora_alpha: float | None = None, lora_dropout: float = 0.05, zero_shot: str | None = None,
    zero_shot_limit: int | None = None, lm_eval_include: list[str] | None = None, zero_shot_online: bool = False,
) -> dict[str, Any]:
    """`prunekit prune --task lm` from its flat options (defaults as the CLI's): :class:`StructuredLM` with
    --heads/--ffn/--layers, else :class:`OneShotSettings` (with a --plan's per-block sparsity), then
    :func:`prune_lm`, with :class:`LMRecovery` when --finetune-tokens or --finetune-epochs is given.
    Options the chosen kind never reads are refused, naming them."""
    options = changed(prune_lm_from_options, locals())
    if schedule != "oneshot":
        raise PrunekitError(f"--schedule {schedule}: --task lm prunes one-shot (then recovers with "
                            "--finetune-tokens); iterative and gradual LM schedules are not built yet")
    recovery = None
    if finetune_tokens is not None or finetune_epochs is not None:
        recovery = LMRecovery(tokens=finetune_tokens, epochs=finetune_epochs, lr=5e-5 if lr is None else lr,
                              batch_size=batch_size, distill=distill, alpha=distill_alpha, temperature=temperature,
                              eval_every=eval_every, lora=lora, lora_alpha=lora_alpha, lora_dropout=lora_dropout)
    else:
        refuse(_pick(options, "lr", "batch_size", "distill", "distill_alpha", "temperature", "eval_every", "lora",
                     "lora_alpha", "lora_dropout"),
               "{}: recovery options, read only with --finetune-tokens or --finetune-epochs")
    structured = None
    if heads or ffn or layers:
        refuse(_pick(options, "method", "sparsity", "pattern", "layer_ratios", "refit", "calibration", "damp"),
               "{}: unstructured one-shot options, not used with --heads/--ffn/--layers")
        structured = StructuredLM(heads=heads, ffn=ffn, layers=layers, round_to=round_to, reconstruct=reconstruct,
                                  latency=latency)
    else:
        refuse(_pick(options, "round_to", "reconstruct", "latency"),
               "{}: structured LM options (--heads/--ffn/--layers), not used without them")
    settings = OneShotSettings(method=method or "sparsegpt", sparsity=0.5 if sparsity is None else sparsity,
                               pattern=pattern, layer_ratios=layer_ratios, refit=refit, calibration=calibration)
    if damp is not None:
        settings.damp = damp
    if pattern and sparsity is None:
        settings.sparsity = settings.target
    plan_dict = None
    if plan is not None:
        check_outside_inputs(out, {"plan": plan})  # prune_lm gets the plan read, not its file
        plan_dict = read_plan(plan)
        if plan_dict["granularity"] != "unstructured" or structured or pattern or sparsity is not None:
            raise PrunekitError("--task lm --plan applies a per-block sparsity plan (prunekit search --task lm); "
                                "do not combine it with --sparsity, --pattern or --heads/--ffn/--layers")
        settings.block_ratios, settings.mlp_ratios = oneshot_ratios(plan_dict)
        settings.sparsity = mean_sparsity(plan_dict)
    return prune_lm(model, data, out, settings, calib_samples=calib_samples, seq_len=seq_len,
                    eval_samples=eval_samples, stride=stride, calib_data=calib_data, save=save, seed=seed, force=force,
                    trust_remote_code=trust_remote_code, structured=structured, plan=plan_dict, recovery=recovery,
                    zero_shot=ZeroShot(zero_shot, zero_shot_limit, lm_eval_include, zero_shot_online) if zero_shot
                    else None)


def _pick(values: dict[str, Any], *names: str) -> dict[str, Any]:
    return {n: values[n] for n in names if n in values}


@dataclass
class StructuredLM:
    """Structured pruning of a decoder LM: fractions of heads (or GQA groups) and FFN neurons, whole blocks."""

    heads: float = 0.0
    ffn: float = 0.0
    layers: int = 0
    round_to: int = 1
    gqa: str = "groups"
    reconstruct: bool = True
    damp: float = 0.01
    latency: bool = True

    def check(self) -> None:
        for key in ("heads", "ffn"):
            if not 0 <= getattr(self, key) < 1:
                raise PrunekitError(f"--{key} must be in [0, 1), got {getattr(self, key)}")
        if self.layers < 0:
            raise PrunekitError(f"--layers must be ≥ 0, got {self.layers}")
        if not (self.heads or self.ffn or self.layers):
            raise PrunekitError("structured pruning needs --heads, --ffn or --layers")

    @property
    def name(self) -> str:
        parts = [f"heads {self.heads:g}" if self.heads else "", f"ffn {self.ffn:g}" if self.ffn else "",
                 f"-{self.layers} layers" if self.layers else ""]
        return " + ".join(p for p in parts if p) + (" + LS" if self.reconstruct else "")


def _prune_structured_lm(lm: torch.nn.Module, calib_ids: torch.Tensor, s: StructuredLM, device: torch.device,
                         progress) -> tuple[float, StructuredPlan, GroupScores]:
    start = time.perf_counter()
    scores = calibrated_scores(lm, calib_ids, device=device)
    plan = plan_lm(lm, scores, heads=s.heads, ffn=s.ffn, layers=s.layers, round_to=s.round_to, gqa=s.gqa)
    if s.reconstruct:
        reconstruct(lm, calib_ids, plan, damp=s.damp, device=device,
                    progress=lambda i, n: progress("least squares: blocks", i, n))
    apply_plan(lm, plan)
    lm.to(device)
    return time.perf_counter() - start, plan, scores


@dataclass
class ZeroShot:
    """lm-eval tasks to score a pruned LM's dense and final model on (see :func:`zero_shot_scores`)."""

    tasks: str | list[str]
    limit: int | None = None
    include: list[str] | None = None
    online: bool = False
    batch_size: int = 8

    def score(self, lm: torch.nn.Module, tokenizer) -> dict[str, Any]:
        return zero_shot_scores(lm, tokenizer, self.tasks, self.limit, log=_log, batch_size=self.batch_size,
                                include=self.include or (), online=self.online)


@dataclass
class LMRecovery:
    """Recovery training after an LM prune: how much text (tokens or epochs of the training windows), how,
    and a perplexity checkpoint every ``eval_every`` steps (0: none between the pruned and final stages)."""

    tokens: int | None = None
    epochs: float | None = None
    lr: float = 5e-5
    batch_size: int = 4
    distill: bool = False
    alpha: float = 0.5
    temperature: float = 2.0
    eval_every: int = 0
    lora: int | None = None  # LoRA rank: adapters merged back with the masks applied, so sparsity stays exact
    lora_alpha: float | None = None
    lora_dropout: float = 0.05

    def check(self) -> None:
        if (self.tokens is None) == (self.epochs is None):
            raise PrunekitError("LM recovery takes --finetune-tokens or --finetune-epochs (one of them)")
        if self.tokens is not None and self.tokens < 1:
            raise PrunekitError(f"--finetune-tokens must be at least 1, got {self.tokens}")
        if self.epochs is not None and self.epochs <= 0:
            raise PrunekitError(f"--finetune-epochs must be > 0, got {self.epochs}")
        if self.batch_size < 1 or self.lr <= 0:
            raise PrunekitError(f"--batch-size must be ≥ 1 and --lr > 0, got {self.batch_size} and {self.lr}")
        if self.eval_every < 0:
            raise PrunekitError(f"--eval-every must be ≥ 0 steps, got {self.eval_every}")
        DistillConfig(alpha=self.alpha, temperature=self.temperature).validate()
        lora_options(self)


def _masks_of(lm: torch.nn.Module, pruned: dict[str, float]) -> MaskSet:
    """Masks holding the one-shot prune's zeros (every Linear it pruned), so training keeps them: a 2:4
    pattern stays 2:4. Fused experts (names that are no module) are not reached by masks."""
    params = {}
    for name in pruned:
        try:
            params[name] = lm.get_submodule(name).weight  # by module name, as the classifier loop's masks
        except AttributeError:
            continue
    masks = MaskSet(params)
    masks.masks = {n: p.detach() != 0 for n, p in params.items()}
    return masks


def _recover(lm: torch.nn.Module, tokenizer, text: LMText, eval_ids: torch.Tensor, r: LMRecovery, *,
             masks: MaskSet | None, teacher: torch.nn.Module | None, seq_len: int, stride: int | None,
             seed: int, start: dict[str, Any]) -> dict[str, Any]:
    """Train the pruned ``lm`` on every window of the training text (:class:`LMTask`'s loss; the teacher's
    KL with ``r.distill``), with perplexity checkpoints on the evaluation windows; what ran, and
    ``metrics``: the final perplexity."""
    task = LMTask(seq_len=seq_len, stride=stride)
    windows = LMWindows.of(training_windows(text, seq_len), text)
    note = None
    if r.tokens is not None:
        epochs, note = epochs_for_tokens(r.tokens, windows)
    else:
        epochs = r.epochs
    if note:
        _log(note)
    evaluation = LMWindows.of(eval_ids, text, stride)
    checkpoints = MetricCheckpoints(task, lm, evaluation, tokenizer, r.eval_every, r.batch_size * seq_len)
    checkpoints.finish(0, start)  # the pruned stage's, measured already
    distill = DistillConfig(alpha=r.alpha, temperature=r.temperature) if teacher is not None else None
    _log(f"recovery: {epochs:.3g} epochs of {len(windows)} training windows × {seq_len} tokens"
         + (f", distilling from the unpruned model (alpha {r.alpha}, T {r.temperature})" if distill else ""))
    cfg = TrainConfig(epochs=epochs, lr=r.lr, batch_size=r.batch_size, seed=seed, lora=lora_options(r))
    result = train(lm, windows, tokenizer, cfg, masks=masks, teacher=teacher, distill=distill, on_step=checkpoints,
                   desc="recover", task=task)
    metrics = perplexity(lm, eval_ids, stride)
    checkpoints.finish(result.steps, metrics)
    return {"metrics": metrics, "tokens": tokens_seen(result.steps, windows, r.batch_size), "steps": result.steps,
            "epochs": epochs, "seconds": result.seconds, "train_loss": result.loss,
            "training_windows": len(windows), "distill": distill is not None, "note": note,
            "checkpoints": checkpoints.records, **({"lora": result.lora} if result.lora else {})}


def _lm_timer(lm: torch.nn.Module) -> Timer:
    """Forward latency at batch 1 and 8 × 128 tokens (the full logits over the vocabulary included)."""
    make = bert_like_inputs(lm.config.vocab_size, model_device(lm), token_type_ids=False)
    return model_timer(lm, make, batch_sizes=(1, 8), seq_len=128)


def _time_dense_and_pruned(model: str, trust_remote_code: bool, lm: torch.nn.Module, stages: list[dict]) -> None:
    """Both stages' latency in the same interleaved rounds, now that pruning is over. The dense model is
    loaded again from ``model`` (which pruning never touches) rather than kept in memory all along: for a
    big LM that copy would double the memory pruning needs; it lives only while it is timed."""
    _log("latency: dense and pruned, in interleaved rounds")
    dense = load_causal_lm(model, trust_remote_code)[0].to(model_device(lm))
    latency = StageLatency()
    latency.add(stages[0], _lm_timer(dense))
    latency.add(stages[-1], _lm_timer(lm))
    latency.run(stages)


def _save_lm(lm: torch.nn.Module, tokenizer, out: str | Path, force: bool, save: str, report: dict[str, Any],
             check_ids: torch.Tensor) -> None:
    """Write the model and report atomically after checking the saved folder reloads to identical logits."""
    device = default_device()
    with torch.no_grad():
        expected = lm(input_ids=check_ids.to(device)).logits.float().cpu()
    lm.to("cpu")
    with atomic_output_dir(out, force) as tmp:
        if save == "structured":
            write_pruned(lm, tokenizer, tmp)
        else:
            save_sparse(lm, tokenizer, tmp, packed=save == "packed")
        reloaded = load(tmp).to(device)
        with torch.no_grad():
            again = reloaded(input_ids=check_ids.to(device)).logits.float().cpu()
        diff = float((again - expected).abs().max())
        report["reload_check"] = {"loader": "transformers" if save == "dense" else "prunekit.load",
                                  "max_abs_logit_diff": diff}
        if diff > 1e-4:
            raise PrunekitError(f"the saved model does not reproduce its logits (max diff {diff:.2e}); nothing written")
        report["disk"] = {"format": save, "weights_bytes": _file_bytes(tmp),
                          "dense_bytes": report["stages"][-1]["size_bytes"],
                          "packed_bytes": report["stages"][-1]["size_compressed_bytes"],
                          "weights_file": PACKED_WEIGHTS if save == "packed" else "model.safetensors"}
        write_report(tmp, report)
    _log(f"wrote {out}")
    print_stage_table(report["stages"])
