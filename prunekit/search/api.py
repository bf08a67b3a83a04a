"""``prunekit sensitivity`` and ``prunekit search`` as Python functions (the CLI only parses and calls these).

Classifiers are measured by validation accuracy with units masked exactly as removal would cut them;
language models by perplexity on held-out windows of the calibration text (the evaluation text is
left for the final, reported measurement).
"""

from __future__ import annotations

import copy
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prunekit.assets import cache_dir
from prunekit.errors import PrunekitError
from prunekit.importance.groups import group_scores
from prunekit.io.atomic import atomic_output_dir, check_output_dir
from prunekit.io.hf import load_causal_lm, locate
from prunekit.prune.structured import apply_plan, plan_from_ratios, removed_ratios
from prunekit.report.measure import bert_like_inputs, model_device
from prunekit.report.metrics import metric_of
from prunekit.report.search_plots import plot_sensitivity, plot_trace
from prunekit.runtime import default_device, seed_everything
from prunekit.search.annealing import Proxy, SearchResult, SearchSettings, anneal, min_size_search
from prunekit.search.budget import Budget, CostModel, latency_table
from prunekit.search.finalists import FINALIST_METRICS, heldout_indices, kl_per_example, paired_choice
from prunekit.search.plan import make_plan, write_plan
from prunekit.search.profile import attention_shares, profile_search
from prunekit.search.sensitivity import (
    DEFAULT_RATIOS,
    ClassifierProbe,
    LMProbe,
    SensitivityTable,
    cache_key,
    parse_ratios,
    run_sensitivity,
    structured_plan,
)
from prunekit.steps import calibration_batches
from prunekit.tasks.classification import EncodedSplit, predict
from prunekit.tasks.classification import evaluate as evaluate_split
from prunekit.tasks.lm import LMText, calibration_windows, evaluation_windows, load_lm_text
from prunekit.train import DistillConfig, TrainConfig, train
from prunekit.workbench import open_workbench

SEARCH_GRANULARITIES = ("structured", "unstructured")
LM_SPACES = ("profile", "blocks")


def _log(msg: str) -> None:
    print(f"[prunekit] {msg}", file=sys.stderr, flush=True)


def _fingerprint(spec: str) -> str:
    """A model's identity for the cache: its resolved folder and the size/mtime of its weight files."""
    try:
        where = Path(locate(spec))
    except PrunekitError:
        return spec
    files = sorted(where.glob("*.safetensors")) if where.is_dir() else []
    return f"{where.resolve()}|" + "|".join(f"{f.name}:{f.stat().st_size}:{int(f.stat().st_mtime)}" for f in files)


def _inputs(model: str, data: Any) -> dict[str, Any]:
    """What ``--out`` must stay clear of: the model and the data (DataOptions, or an LM's text spec)."""
    return {"model": model, "data": getattr(data, "data", data)}


def _key(ratios: Any) -> tuple[float, ...]:
    return tuple(round(float(x), 4) for x in ratios)


def _cache_dir() -> Path:
    return cache_dir() / "search"


@dataclass
class SearchData:
    """Which text to measure on (classification: ``DataOptions``; LM: corpus and windows)."""

    task: str = "classification"
    importance: str = "taylor"  # structured: which heads / neurons go inside a layer
    calib_batches: int = 8
    batch_size: int = 32
    max_eval_samples: int | None = None  # classification: validation examples measured (None = all)
    lm_calib_samples: int = 32
    lm_eval_windows: int = 8  # the proxy's held-out windows (sensitivity table, annealing)
    # the real evaluation's held-out windows: enough that a plan's gain over uniform is more than noise
    lm_val_windows: int = 64
    seq_len: int = 256
    gqa: str = "groups"
    seed: int = 0
    # LM search space: "profile" (depth slope × attention/MLP split, prunekit.search.profile) or "blocks"
    # (every block's ratio free, simulated annealing on the sensitivity table; also --max-drop's space)
    lm_space: str = "profile"
    # classifier, structured: each real evaluation first recovers the cut model for this many epochs
    # (distilled from the unpruned model), so finalists are ranked as they will end up, not as they start
    # (None: 0.25 for structured classifier searches, 0 otherwise)
    recover_epochs: float | None = None
    recover_lr: float = 2e-4
    # how recovered finalists are ranked (prunekit.search.finalists): "kl" = per-example KL to the unpruned
    # model on validation + ``heldout`` training examples kept out of the recovery, and a plan replaces
    # uniform only if it beats it by more than ``margin`` paired standard errors; "accuracy" = validation
    # accuracy, best wins (the ranking before; noisy: one of ~1,000 snippets is 0.1 point)
    finalist_metric: str = "kl"
    heldout: int = 1000
    margin: float = 2.0


class _Session:
    """Everything both commands share: the loaded model, a probe and its identity."""

    def __init__(self, model: str, data: Any, opts: SearchData, trust_remote_code: bool = False) -> None:
        self.opts = opts
        self.spec = model
        if opts.task == "lm":
            self._open_lm(model, data, trust_remote_code)
        elif opts.task == "classification":
            self._open_classifier(model, data, trust_remote_code)
        else:
            raise PrunekitError(f"--task must be classification or lm, got {opts.task!r}")

    def _open_classifier(self, model: str, data: Any, trust_remote_code: bool) -> None:
        o = self.opts
        wb = open_workbench(model, data, o.seed, trust_remote_code)
        if wb.head_is_new:
            raise PrunekitError(f"model {model!r} has no trained classification head; fine-tune it first "
                                "(prunekit finetune): an untrained head makes every sensitivity meaningless")
        self.wb = wb
        self.model = wb.model.eval()
        val = wb.validation
        if o.max_eval_samples and o.max_eval_samples < len(val):
            val = EncodedSplit(val.features[: o.max_eval_samples], val.labels[: o.max_eval_samples])
        self.validation = val

        def evaluate(m: torch.nn.Module) -> float:
            return 100.0 * evaluate_split(m, val, wb.tokenizer, desc=False)[0]["accuracy"]

        batches = calibration_batches(wb, o.calib_batches, o.batch_size, o.seed)
        self.scores = group_scores(self.model, o.importance, batches=batches, seed=o.seed, layers="groups")
        self.identity = {"task": "classification", "model": _fingerprint(model), "data": asdict(data),
                         "importance": o.importance, "calib_batches": o.calib_batches, "validation": len(val),
                         "seed": o.seed, "gqa": o.gqa}
        self.probe = ClassifierProbe(self.model, evaluate, self.scores, self.identity, gqa=o.gqa)

    def _open_lm(self, model: str, data: Any, trust_remote_code: bool) -> None:
        o = self.opts
        seed_everything(o.seed)
        lm, tok = load_causal_lm(model, trust_remote_code)
        self.model = lm.to(default_device()).eval()
        text = load_lm_text(tok, data)
        # search on held-out windows of the *calibration* text: the evaluation text stays unseen
        cut = int(0.8 * len(text.calibration))
        calib = LMText(text.calibration[:cut], text.calibration[cut:], text.source, text.split_rule)
        windows = evaluation_windows(calib, o.seq_len, o.lm_eval_windows)
        validation = evaluation_windows(calib, o.seq_len, o.lm_val_windows)
        calibration = calibration_windows(calib, o.lm_calib_samples, o.seq_len, o.seed)
        self.identity = {"task": "lm", "model": _fingerprint(model), "data": str(data), "seq_len": o.seq_len,
                         "calib_samples": o.lm_calib_samples, "eval_windows": o.lm_eval_windows, "seed": o.seed}
        self.probe = LMProbe(self.model, calibration, windows, self.identity, validation=validation)
        self.scores = None

    def _finalist_data(self) -> None:
        """For KL ranking: the training examples the finalists recover on, the held-out set they are scored
        on (validation + a seeded slice of train kept out of that recovery) and the unpruned model's logits."""
        o, train = self.opts, self.wb.train
        size = min(o.heldout, len(train) // 4)  # small data sets: the recovery keeps at least 3/4 of train
        held = set(heldout_indices(len(train), size, o.seed).tolist()) if size else set()
        self.recover_train = EncodedSplit([f for i, f in enumerate(train.features) if i not in held],
                                          [y for i, y in enumerate(train.labels) if i not in held])
        order = sorted(held)
        self.heldout = EncodedSplit(self.validation.features + [train.features[i] for i in order],
                                    self.validation.labels + [train.labels[i] for i in order])
        self.teacher_logits = predict(self.model, self.heldout, self.wb.tokenizer, desc=False)
        self.finalist_losses: dict[tuple, np.ndarray] = {}

    def recovered(self, units, ratios: Mapping[str, float], epochs: float) -> float:
        """Validation accuracy of the plan cut out of a copy of the model and briefly recovered by
        distillation from the unpruned model: what the plan is worth after ``prunekit prune`` recovers it.
        With KL ranking, the per-example KL on the held-out set is kept in ``finalist_losses``."""
        o = self.opts
        kl = o.finalist_metric == "kl"
        if kl and not hasattr(self, "heldout"):
            self._finalist_data()
        model = copy.deepcopy(self.model)
        apply_plan(model, structured_plan(model, self.scores, units, ratios, gqa=o.gqa))
        train(model, self.recover_train if kl else self.wb.train, self.wb.tokenizer,
              TrainConfig(epochs=epochs, lr=o.recover_lr, batch_size=o.batch_size, seed=o.seed),
              teacher=self.model, distill=DistillConfig(), desc="search: recover candidate")
        if not kl:
            return 100.0 * evaluate_split(model.eval(), self.validation, self.wb.tokenizer, desc=False)[0]["accuracy"]
        logits = predict(model.eval(), self.heldout, self.wb.tokenizer, desc=False)
        self.finalist_losses[_key(ratios.values())] = kl_per_example(logits, self.teacher_logits)
        n_val = len(self.validation)
        return 100.0 * float((logits[:n_val].argmax(-1) == np.asarray(self.validation.labels)).mean())

    def table(self, granularity: str, ratios: Sequence[float], cache: bool = True) -> SensitivityTable:
        path = _cache_dir() / f"sensitivity-{cache_key(self.identity, granularity)}.json"
        _log(f"sensitivity ({granularity}): cache {path}")
        return run_sensitivity(self.probe, granularity, ratios, cache=path if cache else None, progress=_log)


def sensitivity(
    model: str, data: Any, out: str | Path, *, granularity: str = "heads",
    ratios: Sequence[float] | str = DEFAULT_RATIOS, opts: SearchData | None = None, force: bool = False,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Measure every unit of ``granularity`` at every ratio; write ``sensitivity.json`` and ``sensitivity.png``."""
    opts = opts or SearchData()
    ratios = parse_ratios(ratios)
    check_output_dir(out, force, inputs=_inputs(model, data))
    session = _Session(model, data, opts, trust_remote_code)
    table = session.table(granularity, ratios)
    with atomic_output_dir(out, force) as tmp:
        table.write(tmp / "sensitivity.json")
        plot_sensitivity([table], tmp / "sensitivity.png")
        (tmp / "report.md").write_text(_sensitivity_md(table))
    _log(f"wrote {out}")
    return table.to_dict()


def _sensitivity_md(table: SensitivityTable) -> str:
    head = "| unit | " + " | ".join(f"{r:g}" for r in table.ratios) + " |"
    lines = [f"# Sensitivity ({table.granularity})", "",
             f"Validation {table.metric} with one unit pruned at a time, no retraining; baseline "
             f"{table.baseline:.4g}. {table.evaluations} evaluations, {table.seconds:.0f} s.", "",
             head, "| --- |" + " --: |" * len(table.ratios)]
    for u in table.units:
        vals = table.values.get(u, {})
        lines.append(f"| {u} | " + " | ".join(f"{vals[f'{r:g}']:.4g}" if f"{r:g}" in vals else "" for r in table.ratios)
                     + " |")
    return "\n".join(lines) + "\n\n![sensitivity](sensitivity.png)\n"


def search(
    model: str, data: Any, out: str | Path, budget: str | Budget, *, granularity: str | None = None,
    max_drop: float | None = None, evals: int = 8, steps: int = 4000, ratios: Sequence[float] | str = DEFAULT_RATIOS,
    round_to: int = 1, opts: SearchData | None = None, force: bool = False, trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Find per-layer ratios that meet ``budget`` and maximise the validation metric (or, with ``max_drop``,
    the smallest budget within that drop); write ``plan.yaml``, ``search.json`` and the trace plot."""
    opts = opts or SearchData()
    budget = Budget.parse(budget) if isinstance(budget, str) else budget
    granularity = granularity or ("unstructured" if opts.task == "lm" else "structured")
    if granularity not in SEARCH_GRANULARITIES:
        raise PrunekitError(f"search --granularity must be {' or '.join(SEARCH_GRANULARITIES)}, got {granularity!r}")
    if opts.task == "lm" and granularity != "unstructured":
        raise PrunekitError("--task lm searches per-block unstructured sparsity (--granularity unstructured)")
    if granularity == "unstructured" and budget.kind == "latency":
        raise PrunekitError("a latency budget needs structured pruning: unstructured zeros do not make dense "
                            "kernels faster (use params= or macs=)")
    if max_drop is not None and max_drop < 0:
        raise PrunekitError(f"--max-drop must be ≥ 0, got {max_drop}")
    if opts.task == "lm" and opts.lm_space not in LM_SPACES:
        raise PrunekitError(f"--space must be {' or '.join(LM_SPACES)}, got {opts.lm_space!r}")
    if opts.task == "lm" and opts.lm_val_windows < 2:
        raise PrunekitError(f"--val-windows must be at least 2 (scored in two halves), got {opts.lm_val_windows}")
    recover = opts.recover_epochs
    if recover is None:
        recover = 0.25 if opts.task == "classification" and granularity == "structured" else 0.0
    if recover < 0 or (recover > 0 and (opts.task != "classification" or granularity != "structured")):
        raise PrunekitError("--recover-epochs (≥ 0) applies to structured classifier searches only")

    if opts.finalist_metric not in FINALIST_METRICS:
        raise PrunekitError(f"--rank must be {' or '.join(FINALIST_METRICS)}, got {opts.finalist_metric!r}")
    if opts.heldout < 0 or opts.margin < 0:
        raise PrunekitError(f"--heldout and --margin must be ≥ 0, got {opts.heldout} and {opts.margin}")

    settings = SearchSettings(steps=steps, evals=evals, round_to=round_to, seed=opts.seed)
    settings.check()
    ratios = parse_ratios(ratios)
    check_output_dir(out, force, inputs=_inputs(model, data))
    start = time.perf_counter()
    session = _Session(model, data, opts, trust_remote_code)
    units = session.probe.units(granularity)
    # --max-drop bisects the budget on the per-block sensitivity proxy: the profile space has none
    profiles = opts.task == "lm" and opts.lm_space == "profile" and max_drop is None
    if profiles:
        tables = []
    elif granularity == "structured":
        tables = [session.table("heads", ratios), session.table("ffn", ratios)]
    else:
        tables = [session.table("unstructured", ratios)]
    sens_seconds = time.perf_counter() - start
    latency = None
    if budget.kind == "latency":
        latency = _latency_table(session, units)
    cost = CostModel(units, budget.kind, latency)
    if profiles:
        result = _profile_search(session, units, cost, budget, settings)
    else:
        result = _anneal(session, units, cost, budget, tables, settings, max_drop, recover)
    result.extra["recover_epochs"] = recover
    if getattr(session, "ranking", None):
        result.extra["finalist_ranking"] = session.ranking  # in search.json's "search" as in plan.yaml's
    result.extra["sensitivity_seconds"] = sens_seconds
    result.extra["sensitivity_evaluations"] = sum(t.evaluations for t in tables)
    if opts.task == "lm":
        _check_halves(session.probe, result)
    seconds = time.perf_counter() - start
    plan = _plan(session, units, result, granularity, budget, settings, seconds, tables)
    summary = {"plan": plan, "search": _result_dict(result), "seconds": seconds,
               "sensitivity": [t.to_dict() for t in tables]}
    with atomic_output_dir(out, force) as tmp:
        write_plan(tmp / "plan.yaml", plan)
        (tmp / "search.json").write_text(json.dumps(summary, indent=1, default=float))
        plot_trace(result, tmp / "search_trace.png")
        if tables:
            plot_sensitivity(tables, tmp / "sensitivity.png")
        (tmp / "report.md").write_text(_search_md(plan, result, seconds, bool(tables)))
    _log(f"wrote {out} (plan.yaml: {result.best.label}, validation {result.metric} {result.best.real:.4g}; "
         f"uniform {result.uniform.real:.4g}; {seconds:.0f} s)")
    return summary


def _anneal(session: _Session, units, cost: CostModel, budget: Budget, tables: Sequence[SensitivityTable],
            settings: SearchSettings, max_drop: float | None, recover: float = 0.0) -> SearchResult:
    """Simulated annealing on the sensitivity proxy; the best plans measured for real (LMs: by the
    one-shot prune, see :meth:`LMProbe.measure_real`; structured classifiers: after a short
    recovery when ``recover`` > 0)."""
    proxy = Proxy(units, tables)
    cost.check_feasible(budget, proxy.caps)
    probe = session.probe

    def evaluate(r: Sequence[float]) -> float:
        ratios = {u.name: float(x) for u, x in zip(units, r, strict=True)}
        if isinstance(probe, LMProbe):
            return probe.measure_real(probe.blocks(ratios))
        return session.recovered(units, ratios, recover) if recover > 0 else probe.measure(ratios)

    choose = None
    if recover > 0 and session.opts.finalist_metric == "kl":
        def choose(finalists: list) -> int:
            return _choose_by_kl(session, finalists)

    if max_drop is None:
        anchor = _global_ranking(session, units, budget)
        return anneal(units, cost, budget, proxy, evaluate, settings, progress=_log, choose=choose,
                      anchors={"global": anchor} if anchor is not None else None)
    return min_size_search(units, cost, proxy, evaluate, max_drop, budget.kind, settings, progress=_log)


def _global_ranking(session: _Session, units, budget: Budget) -> list[float] | None:
    """Per-unit ratios of one global ranking of the session's head / neuron scores (the other standard
    allocation beside uniform; ``prunekit prune --scope global``) at a params budget; None where that
    ranking does not apply (LMs, other budgets, or a ranking that would empty a layer)."""
    kinds = {u.kind for u in units}
    if session.scores is None or budget.kind != "params" or not kinds <= {"heads", "ffn"}:
        return None
    removed = 1.0 - budget.keep
    try:
        plan = plan_from_ratios(session.model, session.scores, heads=removed if "heads" in kinds else 0.0,
                                ffn=removed if "ffn" in kinds else 0.0, scope="global", gqa=session.opts.gqa)
    except PrunekitError:
        return None
    heads, ffn = removed_ratios(session.model, plan)
    return [(heads if u.kind == "heads" else ffn).get(u.layer, 0.0) for u in units]


def _choose_by_kl(session: _Session, finalists: list) -> int:
    """Rank the recovered finalists (uniform first) by held-out KL to the unpruned model; a plan replaces
    uniform only if its paired gain is beyond ``margin`` standard errors (:func:`paired_choice`)."""
    o = session.opts
    choice = paired_choice([session.finalist_losses[_key(c.ratios)] for c in finalists], 0, o.margin)
    for c, mean, gain, se, z in zip(finalists, choice.means, choice.gains, choice.ses, choice.z, strict=True):
        c.loss = mean
        c.paired = {"gain": gain, "se": se, "z": z}
    n = len(session.heldout)
    _log(f"finalists by held-out KL to the unpruned model ({n} examples: {len(session.validation)} validation + "
         f"{n - len(session.validation)} held-out train): " + ", ".join(
             f"{c.label} {m:.4g} ({z:+.1f} SE)" for c, m, z in zip(finalists, choice.means, choice.z, strict=True)))
    if choice.note:
        _log(choice.note)
    session.ranking = {"metric": "kl", "examples": n, "validation": len(session.validation),
                       "heldout_train": n - len(session.validation), "margin": o.margin, "best": choice.best,
                       "chosen": choice.index, **({"note": choice.note} if choice.note else {})}
    return choice.index


def _profile_search(session: _Session, units, cost: CostModel, budget: Budget,
                    settings: SearchSettings) -> SearchResult:
    """LMs: the (depth slope × attention/MLP split) grid screened by the proxy, the best measured for real."""
    probe = session.probe
    base = probe.measure_proxy([0.0] * len(units))
    return profile_search(units, cost, budget, attention_shares(session.model),
                          lambda p: probe.measure_proxy(p.attention, p.mlp),
                          lambda p: probe.measure_real(p.attention, p.mlp), settings, base, progress=_log)


def _check_halves(probe: LMProbe, result: SearchResult) -> None:
    """Attach each candidate's per-half validation perplexity; keep uniform unless the winner beats it on
    both halves (a gain on one half only is within the noise of the measurement)."""
    for c in result.candidates:
        parts = c.parts or {}
        key = tuple(round(float(x), 4) for x in [*parts.get("attention", c.ratios), *parts.get("mlp", [])])
        c.halves = probe.halves.get(key)
    best, uni = result.best, result.uniform
    if best is uni or best.halves is None or uni.halves is None:
        return
    if not all(b < u for b, u in zip(best.halves, uni.halves, strict=True)):
        result.extra["note"] = (f"{best.label} measured {best.real:.4g} vs uniform {uni.real:.4g} but did not beat "
                                f"uniform on both validation halves ({best.halves} vs {uni.halves}): kept uniform")
        _log(result.extra["note"])
        result.best = uni


def _latency_table(session: _Session, units) -> dict[str, list[list[float]]]:
    model = session.model
    tti = hasattr(session, "wb") and "token_type_ids" in session.wb.tokenizer.model_input_names
    make = bert_like_inputs(model.config.vocab_size, model_device(model), token_type_ids=tti)
    _log("latency table: timing each block shape once (cached)")
    seq_len = min(128, getattr(model.config, "max_position_embeddings", 128))
    return latency_table(model, units, make, cache=_cache_dir() / "latency.json", seq_len=seq_len)


def _plan(session: _Session, units, result: SearchResult, granularity: str, budget: Budget, settings: SearchSettings,
          seconds: float, tables: Sequence[SensitivityTable]) -> dict[str, Any]:
    b = result.best
    scores = {"metric": result.metric, "split": "validation", "baseline": result.baseline, "validation": b.real,
              "predicted": metric_of(result.metric, b.proxy), "uniform_validation": result.uniform.real,
              "uniform_predicted": metric_of(result.metric, result.uniform.proxy), "chosen": b.label}
    if b.halves is not None:
        scores["validation_halves"], scores["uniform_validation_halves"] = b.halves, result.uniform.halves
    search = {"method": result.extra.get("method", "simulated annealing"),
              "steps": settings.steps if not result.extra.get("method") else len(result.trace),
              "real_evaluations": result.evaluations,
              "sensitivity_evaluations": result.extra.get("sensitivity_evaluations"), "t0": result.t0,
              "seed": settings.seed, "seconds": round(seconds, 1), "model": session.spec}
    if result.extra.get("recover_epochs"):
        search["recover_epochs"] = result.extra["recover_epochs"]  # each real evaluation recovered this long first
    if getattr(session, "ranking", None):
        search["finalist_ranking"] = session.ranking
        scores["heldout_kl"], scores["uniform_heldout_kl"] = b.loss, result.uniform.loss
    if "note" in result.extra:
        search["note"] = result.extra["note"]
    budget_d = {"kind": result.budget.kind, "keep": result.budget.keep, "achieved_keep": round(b.kept, 4)}
    if "max_drop" in result.extra:
        budget_d["max_drop"] = result.extra["max_drop"]
    return make_plan(session.model, units, b.ratios, granularity=granularity, budget=budget_d, scores=scores,
                     search=search, importance=session.opts.importance if granularity == "structured" else None,
                     method="wanda" if session.opts.task == "lm" else None, parts=b.parts)


def _result_dict(r: SearchResult) -> dict[str, Any]:
    return {"units": [u.name for u in r.units], "t0": r.t0, "seconds": r.seconds, "evaluations": r.evaluations,
            "metric": r.metric, "baseline": r.baseline, "budget": str(r.budget),
            "candidates": [asdict(c) for c in r.candidates], "best": asdict(r.best), "uniform": asdict(r.uniform),
            "trace": r.trace, **r.extra}


def _search_md(plan: dict[str, Any], r: SearchResult, seconds: float, tables: bool = True) -> str:
    s = plan["scores"]
    how = (f"Simulated annealing, {plan['search']['steps']} proxy steps (T0 = {r.t0:.4g} {r.metric} units)"
           if "method" not in r.extra else
           f"{len(r.trace)} depth profiles × attention/MLP splits screened by the proxy")
    lines = [f"# Search: budget {r.budget}", "", f"{how}, {r.evaluations} real evaluations, {seconds:.0f} s in all.",
             "",
             "| plan | predicted | validation " + r.metric + " | kept |", "| --- | --: | --: | --: |"]
    ranked = any(c.loss is not None for c in r.candidates)
    if ranked:  # finalists ranked by held-out KL, paired against uniform
        lines[-2] += " held-out KL | gain over uniform (SE) |"
        lines[-1] += " --: | --: |"
    for c in r.candidates:
        row = f"| {c.label} | {metric_of(r.metric, c.proxy):.4g} | {c.real:.4g} | {100 * c.kept:.1f} % |"
        if ranked and c.loss is not None:
            p = c.paired or {}
            row += f" {c.loss:.4g} | {p.get('gain', 0.0):+.3g} ({p.get('se', 0.0):.2g}) |"
        lines.append(row)
    if plan["search"].get("finalist_ranking", {}).get("note"):
        lines += ["", plan["search"]["finalist_ranking"]["note"]]
    lines += ["", f"Chosen: **{s['chosen']}** ({r.metric} {s['validation']:.4g}; baseline {s['baseline']:.4g}).", "",
              "![trace](search_trace.png)", ""] + (["![sensitivity](sensitivity.png)", ""] if tables else [])
    return "\n".join(lines)


__all__ = ["CostModel", "SearchData", "search", "sensitivity", "structured_plan"]
