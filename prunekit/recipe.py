"""Recipes: one YAML file that chains pruning, distillation, low-rank, quantisation and export stages.

    model: minilm
    data: {data: movie-reviews, max_length: 64}
    stages:
      - prune: {heads: 0.5, ffn: 0.5, importance: taylor}
      - distill: {epochs: 1, lr: 2.0e-4}
      - int8: {}
      - onnx: {static_int8: true}

The whole file is validated before any work starts: unknown stages or keys (with a suggestion),
values out of range, stage orders that cannot work (training after int8 conversion, structured pruning
of low-rank layers, distilling with no teacher) and a teacher whose labels differ from the model's.
Each stage is then run, saved under ``out/stages/NN-name/``, reloaded and measured (test and validation
metrics, size on disk, parameters); latency of every stage is measured at the end in interleaved
rounds, so the speedups are ratios from the same machine state. ``report.md`` has the stage table,
``stages.png`` and ``tradeoff.png`` (quality against size and latency across the stages).

Stages keep working on one model: ``finetune`` and ``distill`` train it (pruning masks stay applied),
``prune``/``student``/``lowrank`` change it, ``fake_quant`` rounds its weights. ``int8`` and ``onnx`` are
conversions: they turn the current float model into a deployable artefact and leave it as it was, so
only other conversions may follow them.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import numpy as np
from torch import nn

from prunekit import load
from prunekit.arch import is_text_model, prunable_weights
from prunekit.arch.families import compile_regex
from prunekit.config import DataOptions, PruneSettings, default_lr, lora_options
from prunekit.errors import PrunekitError, shown
from prunekit.importance import Importance
from prunekit.importance.groups import DATA_GROUP_CRITERIA
from prunekit.io.atomic import atomic_output_dir, check_output_dir, write_bytes_atomic, write_json_atomic
from prunekit.io.documents import read_yaml
from prunekit.io.hf import check_task, has_classification_head, label_names_of, load_config
from prunekit.io.onnx import export_onnx, onnx_latency
from prunekit.io.shapes import write_pruned
from prunekit.pipeline import log, open_workbench, run_report
from prunekit.prune import MaskSet
from prunekit.prune.structured import model_shapes
from prunekit.quant import quantize_int8
from prunekit.quant.fake import check_bits, fake_quant_size_bytes, fake_quantize
from prunekit.quant.lowrank import LowRankSettings, low_rank_factorize
from prunekit.quant.onnx_static import calibration_feeds, evaluate_onnx, quantize_onnx_static
from prunekit.quant.saved import write_int8
from prunekit.report.measure import count_params, latency_fields, macs_per_token, model_timer
from prunekit.report.measure import interleaved_latency as time_rounds
from prunekit.report.render import print_stage_table, write_report
from prunekit.runtime import default_device
from prunekit.steps import (
    Ratios,
    SolverMethod,
    calibration_batches,
    default_scope,
    structured_step,
    unstructured_method,
    unstructured_step,
)
from prunekit.tasks import get_task
from prunekit.tasks.classification import latency_inputs
from prunekit.train import DistillConfig, TrainConfig, make_student, train
from prunekit.train.checkpoint import fingerprint, resumable, rng_state, set_rng_state

# ---------------------------------------------------------------------------------------------------
# schema
# ---------------------------------------------------------------------------------------------------


@dataclass
class FinetuneStage:
    """Plain fine-tuning (a new head, or recovery without a teacher)."""

    epochs: float = 1.0
    lr: float | None = None
    batch_size: int = 32
    lora: int | None = None  # LoRA rank: adapters merged with the masks applied (prunekit.train.lora)
    lora_alpha: float | None = None
    lora_dropout: float = 0.05


@dataclass
class PruneStage:
    """One-shot pruning, no training (recover with a following finetune or distill stage).
    Structured: heads/ffn/hidden fractions removed, layers a count; unstructured: sparsity."""

    heads: float = 0.0
    ffn: float = 0.0
    layers: int = 0
    hidden: float = 0.0
    importance: str = "l2"
    layer_importance: str | None = None  # how layers are ranked (default: importance.groups.DEFAULT_LAYER_SCORE)
    scope: str | None = None
    round_to: int = 1
    sparsity: float | None = None
    method: str = "magnitude"
    calib_batches: int = 16
    batch_size: int = 32  # of the calibration batches
    damp: float | None = None  # sparsegpt's Hessian dampening (None: its default)

    def as_settings(self) -> PruneSettings:
        """The same stage as :class:`~prunekit.config.PruneSettings` (unvalidated), whose checks it shares."""
        return PruneSettings(heads=self.heads, ffn=self.ffn, layers=self.layers, hidden=self.hidden,
                             importance=self.importance, layer_importance=self.layer_importance, scope=self.scope,
                             round_to=self.round_to, sparsity=self.sparsity, method=self.method, schedule="oneshot",
                             calib_batches=self.calib_batches, batch_size=self.batch_size, damp=self.damp)


@dataclass
class StudentStage:
    """A smaller student initialised from the current model's own layers (which becomes the teacher)."""

    layers: int | None = None
    heads: float = 0.0
    ffn: float = 0.0
    hidden: float = 0.0
    importance: str = "l2"
    calib_batches: int = 16  # calibration batches of the criteria that need data (DATA_GROUP_CRITERIA)
    batch_size: int = 32


@dataclass
class DistillStage:
    """Training with knowledge distillation; teacher = the model before it was first changed, or a folder."""

    epochs: float = 1.0
    lr: float | None = None
    batch_size: int = 32
    alpha: float = 0.5
    temperature: float = 2.0
    hidden_weight: float = 0.0
    attention_weight: float = 0.0
    layer_map: list[int] | None = None
    teacher: str | None = None
    lora: int | None = None  # LoRA rank: adapters merged with the masks applied (prunekit.train.lora)
    lora_alpha: float | None = None
    lora_dropout: float = 0.05


@dataclass
class LowRankStage:
    ratio: float | None = None
    energy: float | None = None
    prunable: str | None = None
    exclude: str | None = None


@dataclass
class FakeQuantStage:
    bits: int = 8
    prunable: str | None = None
    exclude: str | None = None


@dataclass
class Int8Stage:
    """PyTorch dynamic int8 (Linear weights per channel; the token embedding per row)."""

    embeddings: bool = True


@dataclass
class OnnxStage:
    """Export to ONNX (checked against torch); with static_int8, ONNX Runtime static int8 calibrated on
    validation batches."""

    static_int8: bool = True
    calib_batches: int = 16
    seq_len: int = 64


STAGES: dict[str, type] = {"finetune": FinetuneStage, "prune": PruneStage, "student": StudentStage,
                           "distill": DistillStage, "lowrank": LowRankStage, "fake_quant": FakeQuantStage,
                           "int8": Int8Stage, "onnx": OnnxStage}
TRAINING, CHANGING, CONVERSIONS = {"finetune", "distill"}, {"prune", "student", "lowrank"}, {"int8", "onnx"}
TOP_KEYS = ("model", "task", "data", "seed", "out", "latency", "stages", "trust_remote_code")
#: a stage's ``name:`` is a folder under out/stages/: no separators, no ``.``/``..``, no absolute paths
STAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
TOP_TYPES: dict[str, Any] = {"model": str, "task": str, "seed": int, "out": str | None, "trust_remote_code": bool}


@dataclass
class LatencyOptions:
    seq_len: int = 128
    batch_sizes: list[int] = field(default_factory=lambda: [1, 32])
    rounds: int = 3
    min_seconds: float = 0.5


@dataclass
class Stage:
    kind: str
    name: str
    settings: Any


@dataclass
class Recipe:
    model: str
    data: DataOptions
    stages: list[Stage]
    seed: int = 0
    out: str | None = None
    latency: LatencyOptions = field(default_factory=LatencyOptions)
    trust_remote_code: bool = False
    task: str = "classification"  # a prunekit.tasks.TASKS name: every stage trains and measures for it

    def to_dict(self) -> dict[str, Any]:
        task = {"task": self.task} if self.task != "classification" else {}  # older recipes' dicts unchanged
        return {"model": self.model, **task, "data": asdict(self.data), "seed": self.seed, "out": self.out,
                "latency": asdict(self.latency),
                "stages": [{s.kind: {"name": s.name, **asdict(s.settings)}} for s in self.stages]}


def _unknown(key: str, allowed: list[str], where: str) -> PrunekitError:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return PrunekitError(f"{where}: unknown key {key!r}{hint}; allowed: {', '.join(allowed)}")


def _type_ok(value: Any, hint: Any) -> bool:
    """Whether a parsed YAML value has the annotated type (bools are not numbers; floats are finite,
    since NaN passes every range check and would only fail hours later)."""
    if get_origin(hint) in (Union, UnionType):
        return any(_type_ok(value, h) for h in get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (bool, str):
        return isinstance(value, hint)
    if get_origin(hint) in (list, tuple):
        return isinstance(value, list | tuple) and all(_type_ok(v, get_args(hint)[0]) for v in value)
    return True  # Any


def _type_name(hint: Any) -> str:
    if get_origin(hint) in (Union, UnionType):
        return " or ".join(_type_name(h) for h in get_args(hint) if h is not type(None))
    if get_origin(hint) in (list, tuple):
        return f"a list of {_type_name(get_args(hint)[0])}"
    named = {float: "float (a finite number)", bool: "bool (true or false)"}
    return named.get(hint, getattr(hint, "__name__", str(hint)))


def _check_type(value: Any, hint: Any, what: str) -> None:
    if not _type_ok(value, hint):
        raise PrunekitError(f"{what} must be {_type_name(hint)}, got {shown(value)} ({type(value).__name__})")


def _mapping(values: Any, where: str) -> dict[Any, Any]:
    """A copy of a settings mapping ({} for an empty entry); anything else is an error naming the place."""
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise PrunekitError(f"{where}: expected a mapping of settings, got {shown(values)} ({type(values).__name__})")
    return dict(values)


def _build(cls: type, values: Any, where: str) -> Any:
    """A dataclass from a mapping: unknown keys and wrongly typed values are errors naming the place."""
    values = _mapping(values, where)
    allowed = [f.name for f in fields(cls)]
    for key in values:
        if key not in allowed:
            raise _unknown(str(key), allowed, where)
    hints = get_type_hints(cls)
    for f in fields(cls):
        if f.name not in values:
            continue
        _check_type(values[f.name], hints[f.name], f"{where}: {f.name}")
        if values[f.name] is not None and (hints[f.name] is float or float in get_args(hints[f.name])):
            values[f.name] = float(values[f.name])
    return cls(**values)


def parse_recipe(source: str | Path | dict[str, Any]) -> Recipe:
    """Read and validate a recipe (a YAML file or an already-parsed dict); no model or data is touched."""
    if isinstance(source, dict):
        raw, where = copy.deepcopy(source), "recipe"
    else:
        raw, where = read_yaml(source, "recipe"), str(Path(source).expanduser())
    if not isinstance(raw, dict):
        raise PrunekitError(f"{where}: a recipe is a mapping with model, data and stages")
    for key in raw:
        if key not in TOP_KEYS:
            raise _unknown(str(key), list(TOP_KEYS), where)
    for key, hint in TOP_TYPES.items():
        if key in raw:
            _check_type(raw[key], hint, f"{where}: {key}")
    if not raw.get("model"):
        raise PrunekitError(f"{where}: no model given")
    # get_task refuses an unknown name here, before any model loads
    if "task" in raw and get_task(raw["task"]).name == "lm":
        raise PrunekitError(f"{where}: recipes do not run --task lm yet; use prunekit prune --task lm "
                            "(--finetune-tokens recovers)")
    data = raw.get("data", "movie-reviews")
    data = {"data": data} if isinstance(data, str) else data
    if isinstance(data, dict) and isinstance(data.get("text_columns"), str):  # one column, as the CLI allows
        data = {**data, "text_columns": [data["text_columns"]]}
    data = _build(DataOptions, data, f"{where}: data")
    if data.text_columns is not None:
        data.text_columns = tuple(data.text_columns)
    stages_raw = raw.get("stages")
    if not isinstance(stages_raw, list) or not stages_raw:
        raise PrunekitError(f"{where}: stages must be a non-empty list")
    stages: list[Stage] = []
    for i, entry in enumerate(stages_raw, start=1):
        if isinstance(entry, str):
            entry = {entry: {}}
        if not isinstance(entry, dict) or len(entry) != 1:
            raise PrunekitError(f"{where}: stage {i} must be one `kind: {{settings}}` entry, got {shown(entry)}")
        kind, values = next(iter(entry.items()))
        if kind not in STAGES:
            close = difflib.get_close_matches(str(kind), list(STAGES), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise PrunekitError(f"{where}: stage {i}: unknown stage {kind!r}{hint}; stages: {', '.join(STAGES)}")
        values = _mapping(values, f"{where}: stage {i} ({kind})")
        name = str(values.pop("name", f"{i:02d}-{kind}"))
        stages.append(Stage(kind, name, _build(STAGES[kind], values, f"{where}: stage {i} ({kind})")))
    latency = _build(LatencyOptions, raw.get("latency"), f"{where}: latency")
    recipe = Recipe(raw["model"], data, stages, raw.get("seed", 0), raw.get("out"), latency,
                    raw.get("trust_remote_code", False), raw.get("task", "classification"))
    check_recipe(recipe, where)
    return recipe


def check_recipe(recipe: Recipe, where: str = "recipe") -> None:
    """Values in range and an order of stages that can work."""
    names = [s.name for s in recipe.stages]
    for i, name in enumerate(names, start=1):
        if not STAGE_NAME.fullmatch(name) or name.lower() == "baseline":
            raise PrunekitError(f"{where}: stage {i}: name {name!r} must be a plain folder name (letters, digits, "
                                f"'_', '.', '-', starting with a letter or digit, at most 100 characters; not "
                                "'baseline'): it becomes out/stages/NAME")
    if len({n.lower() for n in names}) != len(names):  # case-insensitive filesystems would merge them
        raise PrunekitError(f"{where}: stage names must be unique (ignoring case), got {names}")
    seen: list[str] = []
    unstructured = False
    for i, st in enumerate(recipe.stages, start=1):
        at, s = f"{where}: stage {i} ({st.kind})", st.settings
        done_conv = [k for k in seen if k in CONVERSIONS or k == "fake_quant"]
        if done_conv and st.kind not in CONVERSIONS:
            verb = "fine-tuning" if st.kind in TRAINING else f"a {st.kind} stage"
            raise PrunekitError(f"{at}: {verb} after {done_conv[0]} cannot work: {done_conv[0]} must come after "
                                "every training and pruning stage (only int8/onnx may follow it)")
        if st.kind in CONVERSIONS and st.kind in seen:
            raise PrunekitError(f"{at}: only one {st.kind} stage per recipe")
        if st.kind in ("prune", "student") and "lowrank" in seen:
            raise PrunekitError(f"{at}: {st.kind} after lowrank cannot work: pruning acts on the original "
                                "Linear layers, so prune first, then factorise")
        _check_min(s, MINIMA.get(st.kind, {}), at)
        for key in ("prunable", "exclude"):  # a bad regex would otherwise fail only when the stage runs
            if getattr(s, key, None) is not None:
                compile_regex(getattr(s, key), f"{at}: {key}")
        if st.kind in TRAINING:
            if s.epochs <= 0:
                raise PrunekitError(f"{at}: epochs must be > 0")
            if s.lr is not None and s.lr <= 0:
                raise PrunekitError(f"{at}: lr must be > 0")
        if st.kind == "prune":
            structured = bool(s.heads or s.ffn or s.layers or s.hidden)
            if structured == (s.sparsity is not None):
                raise PrunekitError(f"{at}: give structured fractions (heads/ffn/layers/hidden) or a sparsity, "
                                    "exactly one kind")
            if structured and unstructured:
                raise PrunekitError(f"{at}: structured pruning after unstructured pruning cannot work; "
                                    "prune structurally first")
            s.as_settings().validate()
            unstructured = unstructured or not structured
        elif st.kind == "student":
            for k in ("heads", "ffn", "hidden"):
                if not 0 <= getattr(s, k) < 1:
                    raise PrunekitError(f"{at}: {k} is the fraction removed and must be in [0, 1)")
            if unstructured:
                raise PrunekitError(f"{at}: a student after unstructured pruning cannot work; make the student first")
        elif st.kind == "distill":
            if s.teacher is None and not any(k in CHANGING for k in seen):
                raise PrunekitError(f"{at}: nothing before it changed the model, so the teacher would be the student "
                                    "itself; put a prune/student/lowrank stage first or give teacher: FOLDER")

            DistillConfig(s.alpha, s.temperature, s.hidden_weight, s.attention_weight).validate()
            if s.layer_map is not None and any(k < 0 for k in s.layer_map):
                raise PrunekitError(f"{at}: layer_map holds teacher layer indices (from 0), got {s.layer_map}")
        elif st.kind == "lowrank":
            LowRankSettings(s.ratio, s.energy, s.prunable, s.exclude).validate()
        elif st.kind == "fake_quant":
            check_bits(s.bits)
        elif st.kind == "onnx" and (s.calib_batches < 1 or s.seq_len < 2):
            raise PrunekitError(f"{at}: calib_batches must be >= 1 and seq_len >= 2")
        seen.append(st.kind)
    if recipe.latency.rounds < 0 or any(b < 1 for b in recipe.latency.batch_sizes):
        raise PrunekitError(f"{where}: latency rounds must be >= 0 and batch sizes >= 1")
    _check_min(recipe.latency, {"seq_len": 1, "min_seconds": 0}, f"{where}: latency")
    _check_min(recipe.data, {"max_length": 1, "max_train_samples": 1, "max_eval_samples": 1}, f"{where}: data")


#: lower bounds of the settings no other check covers (a batch of 0 would fail only when training starts)
MINIMA: dict[str, dict[str, float]] = {"finetune": {"batch_size": 1}, "distill": {"batch_size": 1},
                                       "prune": {"calib_batches": 1, "batch_size": 1},
                                       "student": {"layers": 1, "calib_batches": 1, "batch_size": 1}}


def _check_min(settings: Any, minima: dict[str, float], where: str) -> None:
    for key, low in minima.items():
        value = getattr(settings, key)
        if value is not None and value < low:
            raise PrunekitError(f"{where}: {key} must be >= {low}, got {value}")


def check_inputs(recipe: Recipe) -> None:
    """What can be checked from configs alone, before any weights load: the model exists, a bare
    encoder gets a head first, every teacher predicts the model's labels."""
    _, config = load_config(recipe.model, recipe.trust_remote_code)
    check_task(recipe.model, config, get_task(recipe.task).head)
    if not has_classification_head(config) and recipe.stages[0].kind != "finetune":
        raise PrunekitError(f"model {recipe.model!r} has no trained classification head: start the recipe with "
                            "a finetune stage")
    for st in recipe.stages:
        if st.kind == "distill" and st.settings.teacher is not None:
            _, tconfig = load_config(st.settings.teacher, recipe.trust_remote_code)
            if not has_classification_head(tconfig):
                raise PrunekitError(f"teacher {st.settings.teacher!r} has no classification head")
            if has_classification_head(config) and label_names_of(tconfig) != label_names_of(config):
                raise PrunekitError(f"teacher {st.settings.teacher!r} predicts labels {label_names_of(tconfig)} but "
                                    f"the model predicts {label_names_of(config)}: a teacher must predict the same "
                                    "classes in the same order")


def recipe_inputs(recipe: Recipe, source: str | Path | dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything a run reads, which its ``--out`` must stay clear of: model, data, teachers, the recipe file."""
    teachers = {f"teacher (stage {s.name})": s.settings.teacher for s in recipe.stages if s.kind == "distill"}
    return {"model": recipe.model, "data": recipe.data.data,
            "recipe": None if isinstance(source, dict) else source, **teachers}


# ---------------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------------


@dataclass
class _State:
    wb: Any
    recipe: Recipe
    root: Path
    teacher: nn.Module | None = None
    layer_map: list[int] | None = None
    masks: Any = None
    float_dir: Path | None = None
    runners: dict[str, Any] = field(default_factory=dict)  # stage name -> torch module or ONNX path
    records: list[dict[str, Any]] = field(default_factory=list)
    resumed_rng: Path | None = None  # resuming: the random state after the last finished stage


def run_recipe(source: str | Path | dict[str, Any], out: str | Path | None = None, *, force: bool = False,
               keep_runners: bool = False, resume: bool = True, checkpoint: Any = None) -> dict[str, Any]:
    """Validate, then run every stage of a recipe; write ``out`` (atomically) and return the report.

    With ``keep_runners`` the report also holds ``_runners`` (stage name → model or ONNX path) so a
    benchmark can time them again; it is never written to report.json. The same recipe run again after
    a kill resumes (``resume=False`` starts over): finished stages are not measured again (their records
    and artefacts are in the temporary output), and the stage in progress continues from its last
    training checkpoint (``checkpoint``: a :class:`~prunekit.train.checkpoint.CheckpointOptions`)."""
    recipe = parse_recipe(source)
    out = out or recipe.out
    if out is None:
        raise PrunekitError("give an output folder (--out, or out: in the recipe)")
    check_output_dir(out, force, inputs=recipe_inputs(recipe, source))
    check_inputs(recipe)
    wb = open_workbench(recipe.model, recipe.data, recipe.seed, recipe.trust_remote_code, task=recipe.task)
    key = fingerprint("run", recipe=recipe.to_dict(), trust_remote_code=recipe.trust_remote_code)
    with atomic_output_dir(out, force, fingerprint=key, resume=resume) as tmp, \
            resumable(tmp, checkpoint) as checkpoints:
        state = _State(wb, recipe, Path(tmp))
        done = _finished_stages(state, checkpoints.folder if checkpoints else None)
        if not wb.head_is_new and not done:
            _fresh(state, "baseline")
            _measure(state, "baseline", "baseline", 0.0)
        for i, st in enumerate(recipe.stages, start=1):
            if i <= done:  # finished: replayed so the model is as it was after it (training loads its
                if st.kind not in CONVERSIONS:  # final checkpoint); conversions only made an artefact
                    log(f"stage {st.name}: finished before the interruption, replayed from its checkpoint")
                    RUNNERS[st.kind](state, st)
                if i == done:
                    _restore_rng(state)
                continue
            log(f"stage {st.name}")
            _fresh(state, st.name)
            t0 = time.perf_counter()
            extra = RUNNERS[st.kind](state, st)
            _measure(state, st.name, st.kind, time.perf_counter() - t0, extra)
            if checkpoints is not None:
                _stage_finished(state, checkpoints.folder, i)
        _interleaved_latency(state)
        report = run_report("run", wb, {"recipe": recipe.to_dict()}, recipe.seed, state.records)
        report["stopped"] = None
        write_report(tmp, report)
    print_stage_table(report["stages"])
    if keep_runners:  # ONNX files were written in the temporary folder that became ``out``
        report["_runners"] = {k: Path(out) / v.relative_to(tmp) if isinstance(v, Path) else v
                              for k, v in state.runners.items()}
    return report


def _stage_finished(state: _State, folder: Path, done: int) -> None:
    """Record in the checkpoint that ``done`` stages are finished: their records (so the report of a
    resumed run is complete), the random state after them; the RNG file first, the JSON naming it last."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(rng_state(), buffer)
    write_bytes_atomic(folder / f"stage-{done:03d}-rng.pt", buffer.getvalue())
    write_json_atomic(folder / "stages.json", {"done": done, "records": state.records,
                                               "float_dir": str(state.float_dir.relative_to(state.root))
                                               if state.float_dir is not None else None})
    for old in folder.glob("stage-*-rng.pt"):
        if old.name != f"stage-{done:03d}-rng.pt":
            old.unlink()


def _finished_stages(state: _State, folder: Path | None) -> int:
    """How many stages a killed run of this recipe finished (0 when not resuming); their records and
    artefacts (reloaded for the final latency rounds) are restored into ``state``."""
    import json

    if folder is None or not (folder / "stages.json").is_file():
        return 0
    saved = json.loads((folder / "stages.json").read_text())
    state.records = saved["records"]
    for record in state.records:
        artefact = state.root / record["artefact"]
        state.runners[record["name"]] = artefact if artefact.suffix == ".onnx" else load(artefact).cpu().eval()
    state.float_dir = state.root / saved["float_dir"] if saved["float_dir"] else None
    state.resumed_rng = folder / f"stage-{saved['done']:03d}-rng.pt"
    log(f"resuming: {saved['done']} of {len(state.recipe.stages)} stages finished before the interruption")
    return saved["done"]


def _fresh(state: _State, name: str) -> None:
    """A stage's folder starts empty (a killed run may have left it half-written)."""
    import shutil

    shutil.rmtree(state.root / "stages" / name, ignore_errors=True)


def _restore_rng(state: _State) -> None:
    """After the last finished stage is replayed, continue with the random state the killed run had."""
    import torch

    if state.resumed_rng is not None:
        set_rng_state(torch.load(state.resumed_rng, weights_only=True))


def _train_cfg(state: _State, s: Any, offset: int):
    lr = s.lr if s.lr is not None else default_lr(is_text_model(state.wb.model))
    return TrainConfig(epochs=s.epochs, lr=lr, batch_size=s.batch_size, seed=state.recipe.seed + offset,
                       lora=lora_options(s))


def _keep_teacher(state: _State) -> None:
    if state.teacher is None:
        state.teacher = copy.deepcopy(state.wb.model).eval()


def _finetune(state: _State, st: Stage) -> dict[str, Any]:
    r = train(state.wb.model, state.wb.train, state.wb.tokenizer, _train_cfg(state, st.settings, 1),
              masks=state.masks, desc=st.name, task=state.wb.task)
    return {"train_steps": r.steps, **({"lora": r.lora} if r.lora else {})}


def _prune(state: _State, st: Stage) -> dict[str, Any]:
    """One step of :mod:`prunekit.steps`, as the prune loop's one-shot step takes it."""
    s, wb, seed = st.settings, state.wb, state.recipe.seed
    _keep_teacher(state)
    if s.sparsity is not None:
        params = prunable_weights(wb.model)
        # an earlier unstructured stage's zeros stay zero and count toward this one's target, as in --schedule
        # iterative (a fresh random pick, or SparseGPT's column updates, would otherwise revive some)
        earlier = state.masks.masks if state.masks is not None and all(
            n in state.masks.masks and state.masks.masks[n].shape == p.shape for n, p in params.items()) else None
        state.masks = MaskSet(params)
        criterion = unstructured_method(wb.model, params, s.method, seed)
        if criterion is None:
            if earlier:
                state.masks.update(earlier)
            method: Importance | SolverMethod = SolverMethod(s.method, damp=s.damp)
            scope = "local"
        else:
            method, scope = criterion, s.scope or default_scope(criterion)
        unstructured_step(wb, state.masks, method, s.sparsity, scope=scope, seed=seed, calib_batches=s.calib_batches,
                          batch_size=s.batch_size, previous=earlier)
        return {"target_sparsity": s.sparsity}
    ratios = Ratios(heads=s.heads, ffn=s.ffn, hidden=s.hidden, layers=s.layers)
    plan, shapes = structured_step(wb, ratios, criterion=s.importance, layer_criterion=s.layer_importance,
                                   scope=s.scope or "local", round_to=s.round_to, seed=seed,
                                   calib_batches=s.calib_batches, batch_size=s.batch_size)
    if plan.layers is not None and state.layer_map is None:
        state.layer_map = list(plan.layers)  # kept layers pair with the teacher layers they came from
    return {"plan": plan.to_dict(), "shapes": shapes}


def _student(state: _State, st: Stage) -> dict[str, Any]:
    s, wb = st.settings, state.wb
    _keep_teacher(state)
    needs_batches = s.importance in DATA_GROUP_CRITERIA
    batches = calibration_batches(wb, s.calib_batches, s.batch_size, state.recipe.seed) if needs_batches else None
    wb.model, state.layer_map = make_student(wb.model, s.layers, heads=s.heads, ffn=s.ffn, hidden=s.hidden,
                                             importance=s.importance, batches=batches)
    return {"layer_map": state.layer_map, "shapes": model_shapes(wb.model)}


def _distill(state: _State, st: Stage) -> dict[str, Any]:
    s, wb = st.settings, state.wb
    teacher = load(s.teacher).to(default_device()).eval() if s.teacher else state.teacher
    layer_map = s.layer_map if s.layer_map is not None else (state.layer_map if not s.teacher else None)
    if layer_map is not None and len(layer_map) != wb.model.config.num_hidden_layers:
        layer_map = None  # the model changed depth since; fall back to the even spread
    cfg = DistillConfig(s.alpha, s.temperature, s.hidden_weight, s.attention_weight,
                        tuple(layer_map) if layer_map is not None else None)
    r = train(wb.model, wb.train, wb.tokenizer, _train_cfg(state, s, 2), masks=state.masks, teacher=teacher,
              distill=cfg, desc=st.name, task=wb.task)
    return {"train_steps": r.steps, "layer_map": list(layer_map) if layer_map else None,
            **({"lora": r.lora} if r.lora else {})}


def _lowrank(state: _State, st: Stage) -> dict[str, Any]:
    s = st.settings
    _keep_teacher(state)
    done = low_rank_factorize(state.wb.model, LowRankSettings(s.ratio, s.energy, s.prunable, s.exclude))
    state.masks = None  # the masked Linear layers are gone; their factors are dense
    return {"low_rank": {n: v["rank"] for n, v in done.items()}}


def _fake_quant(state: _State, st: Stage) -> dict[str, Any]:
    s = st.settings
    done = fake_quantize(state.wb.model, s.bits, s.prunable, s.exclude)
    return {"bits": s.bits, "fake_quant_size_bytes": fake_quant_size_bytes(state.wb.model, done, s.bits)}


def _int8(state: _State, st: Stage) -> dict[str, Any]:
    return {"_model": quantize_int8(state.wb.model, embeddings=st.settings.embeddings)}


def _onnx(state: _State, st: Stage) -> dict[str, Any]:
    s, wb = st.settings, state.wb
    folder = state.root / "stages" / st.name
    folder.mkdir(parents=True)
    fp32 = folder / "model.onnx"
    exported = export_onnx(state.float_dir, fp32, seq_len=s.seq_len)
    extra: dict[str, Any] = {"export_max_abs_diff": exported["max_abs_diff"], "onnx_fp32_bytes": exported["size_bytes"]}
    path = fp32
    if s.static_int8:
        feeds = calibration_feeds(wb.validation, wb.tokenizer, s.calib_batches, 32, state.recipe.seed)
        path = Path(quantize_onnx_static(fp32, folder / "model.int8.onnx", feeds)["path"])
    extra["_onnx"] = path
    return extra


RUNNERS = {"finetune": _finetune, "prune": _prune, "student": _student, "distill": _distill, "lowrank": _lowrank,
           "fake_quant": _fake_quant, "int8": _int8, "onnx": _onnx}


def _dir_bytes(folder: Path, suffixes: tuple[str, ...] = (".safetensors",)) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.name.endswith(suffixes))


def _measure(state: _State, name: str, kind: str, seconds: float, extra: dict[str, Any] | None = None) -> None:
    """Metrics of the stage's saved artefact (reloaded, so what is measured is what was written)."""
    wb = state.wb
    evaluate = wb.task.evaluate
    extra = dict(extra or {})
    model = extra.pop("_model", None)
    onnx_path = extra.pop("_onnx", None)
    folder = state.root / "stages" / name
    record: dict[str, Any] = {"name": name, "kind": kind}
    if onnx_path is not None:
        val, _ = evaluate_onnx(onnx_path, wb.validation, wb.tokenizer)
        test, _ = evaluate_onnx(onnx_path, wb.test, wb.tokenizer)
        record.update(disk_bytes=Path(onnx_path).stat().st_size, artefact=str(Path(onnx_path).relative_to(state.root)))
        state.runners[name] = Path(onnx_path)
    else:
        folder.mkdir(parents=True)
        if model is not None:  # int8: written, reloaded, and the reloaded model is what gets measured
            write_int8(model, wb.tokenizer, folder)
        else:
            model = wb.model
            write_pruned(model, wb.tokenizer, folder)
            state.float_dir = folder
        reloaded = load(folder).to(next(wb.model.parameters()).device)
        val, _ = evaluate(reloaded, wb.validation, wb.tokenizer, desc=False)
        test, logits = evaluate(reloaded, wb.test, wb.tokenizer, desc=False)
        _, want = evaluate(model, wb.test, wb.tokenizer, desc=False)
        total, nonzero = count_params(model) if onnx_path is None and kind != "int8" else (None, None)
        record.update(disk_bytes=_dir_bytes(folder), artefact=str(folder.relative_to(state.root)),
                      params_total=total, params_nonzero=nonzero,
                      reload_max_abs_logit_diff=float(np.abs(logits - want).max()) if len(want) else 0.0)
        if kind != "int8":
            record["macs_per_token"] = macs_per_token(model, state.recipe.latency.seq_len)
        state.runners[name] = copy.deepcopy(reloaded).cpu().eval() if kind != "int8" else reloaded
    record.update(metrics=test, validation_metrics=val, size_bytes=record["disk_bytes"], latency_ms=None,
                  seconds=float(seconds), **extra)
    state.records.append(record)
    log(f"{name}: test {wb.task.metric} {wb.task.show(test[wb.task.metric])}, "
        f"{record['disk_bytes'] / 1e6:.1f} MB on disk")


def _interleaved_latency(state: _State) -> None:
    """Every stage's latency, measured in ``rounds`` interleaved rounds at the end (median, rounds, spread)."""
    lat = state.recipe.latency
    if lat.rounds == 0 or not state.runners:
        return
    timers = runner_timers(state.runners, state.wb.tokenizer, state.wb.model.config.vocab_size, lat)
    samples = time_rounds(timers, lat.rounds)
    for record in state.records:
        if record["name"] in samples:
            record.update(latency_fields(samples[record["name"]]))


def runner_timers(runners: dict[str, Any], tokenizer, vocab_size: int, lat: LatencyOptions) -> dict[str, Any]:
    """A :data:`~prunekit.report.measure.Timer` per stage: torch modules and ONNX files (by path) alike."""
    make = latency_inputs(tokenizer, vocab_size, "cpu")

    def onnx_timer(path: Path):
        return lambda: onnx_latency(path, make, lat.batch_sizes, lat.seq_len, min_seconds=lat.min_seconds)

    return {name: onnx_timer(runner) if isinstance(runner, Path) else
            model_timer(runner, make, batch_sizes=lat.batch_sizes, seq_len=lat.seq_len, min_seconds=lat.min_seconds)
            for name, runner in runners.items()}


def interleaved_latency(runners: dict[str, Any], tokenizer, vocab_size: int,
                        lat: LatencyOptions) -> dict[str, dict[str, float]]:
    """{name: {"batch_1": ms, ...}}: the median of ``lat.rounds`` interleaved rounds (for benchmarks; see
    :func:`prunekit.report.measure.interleaved_latency`)."""
    samples = time_rounds(runner_timers(runners, tokenizer, vocab_size, lat), lat.rounds)
    return {name: latency_fields(rounds)["latency_ms"] for name, rounds in samples.items()}
