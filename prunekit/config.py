"""Settings for a pruning run, validated once at the edge so the loop can trust them."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from prunekit.data.options import DataOptions as DataOptions  # re-exported: tasks read it below config
from prunekit.errors import PrunekitError
from prunekit.importance import METHODS, make_importance
from prunekit.importance.groups import (  # group criteria; those that score from calibration batches
    CRITERIA,
    DATA_GROUP_CRITERIA,
    DEFAULT_LAYER_SCORE,
    LAYER_SCORES,
)
from prunekit.importance.registry import Names
from prunekit.prune import SCOPES, check_sparsity
from prunekit.prune.oneshot import OneShotSettings
from prunekit.prune.solvers import PRUNING_SOLVERS
from prunekit.schedule import check_schedule
from prunekit.search import plan as plans  # the module: read_plan is looked up when a plan is read
from prunekit.search.budget import Budget
from prunekit.train.distill import DistillConfig
from prunekit.train.lora import LoraOptions

#: classifier methods that solve for new weights in calibrated block-by-block passes (prune/oneshot.py)
#: instead of ranking weights with a criterion (importance/)
#: (live views of the registries in prunekit.importance.registry and prunekit.prune.solvers)
SOLVER_METHODS = PRUNING_SOLVERS
CLASSIFIER_METHODS = Names(lambda: (*METHODS, *SOLVER_METHODS))

#: default learning rates: fine-tuning a pretrained transformer, training/recovering a small text model from scratch
TRANSFORMER_LR, TEXTNET_LR = 5e-5, 2e-3


def default_lr(text_model: bool) -> float:
    return TEXTNET_LR if text_model else TRANSFORMER_LR


@dataclass
class TrainOptions:
    epochs: float = 1.0
    lr: float | None = None  # None: default_lr for the model kind
    batch_size: int = 32
    tokens: int | None = None  # --task lm: a budget in training tokens instead of epochs
    eval_every: int = 0  # --task lm: a metric checkpoint every K steps (0: before and after only)
    lora: int | None = None  # LoRA rank: train adapters, merged with the masks applied (train/lora.py)
    lora_alpha: float | None = None
    lora_dropout: float = 0.05


def lora_options(opts: Any) -> LoraOptions | None:
    """The validated LoRA options ``--lora R``/``--lora-alpha``/``--lora-dropout`` ask for, or None
    (``opts``: TrainOptions, PruneSettings or a recipe's training stage, all with those three fields)."""
    if opts.lora is None:
        return None
    return LoraOptions(opts.lora, opts.lora_alpha, opts.lora_dropout).validate()


@dataclass
class PruneSettings:
    """Everything that decides what gets pruned and how it recovers (see ``prunekit prune --help``)."""

    sparsity: float | None = None  # unstructured target; 0.5 when nothing else is asked for
    threshold: float | None = None
    method: str = "magnitude"
    scope: str | None = None  # global for unstructured, local for structured
    schedule: str = "gradual"
    steps: int = 1
    finetune_epochs: float = 1.0
    lr: float | None = None  # None: default_lr for the model kind
    batch_size: int = 32
    max_drop: float | None = None
    calib_batches: int = 16
    damp: float | None = None  # sparsegpt: Hessian dampening (None: OneShotSettings' default)
    prune_every: int | None = None
    ramp_end: float = 0.7
    prunable: str | None = None
    exclude: str | None = None
    distill: bool = False
    distill_alpha: float = 0.5
    temperature: float = 2.0
    distill_hidden: float = 0.0  # weight of the hidden-state MSE (TinyBERT) added to the logit loss
    lora: int | None = None  # recover with LoRA adapters of this rank, merged sparse (see TrainOptions)
    lora_alpha: float | None = None
    lora_dropout: float = 0.05
    distill_loss: str = "mse"  # embeddings: mse | cosine between the student's and the teacher's vectors
    baseline_epochs: float = 1.0
    latency: bool = True
    latency_seq_len: int = 128
    # structured pruning: fractions removed (layers: a count), ranked by a group criterion
    heads: float = 0.0
    ffn: float = 0.0
    layers: int = 0
    hidden: float = 0.0
    round_to: int = 1
    importance: str | None = None  # None: the plan's criterion with --plan, else l2
    layer_importance: str | None = None  # --layers ranking; None: importance.groups.DEFAULT_LAYER_SCORE
    gqa: str = "groups"
    vocab_corpus: str | None = None  # keep only tokens this corpus uses
    # structured pruning of recurrent / conv text models: fractions removed
    units: float = 0.0  # LSTM/GRU/RNN hidden units (every layer and direction)
    filters: float = 0.0  # Conv1d filters
    embedding: float = 0.0  # embedding dimensions
    # per-layer ratios from `prunekit search` (a plan.yaml), or structure learned with L0 gates
    plan: str | None = None
    learn_structure: bool = False
    budget: str | None = None  # --learn-structure: e.g. params=0.5
    learn_layers: bool = False  # --learn-structure: gate whole layers too (prunekit.search.l0: off by default)
    gate_warm_start: float | None = None  # --learn-structure: log α spread of the ranked start (None: L0Settings')

    #: the parsed --plan, read once by :meth:`validate` (not a setting: to_dict leaves it out)
    _plan: dict[str, Any] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def plan_data(self) -> dict[str, Any] | None:
        """The parsed --plan file: read on first use and kept, so the YAML is read once per settings."""
        if self.plan is None:
            return None
        if self._plan is None:
            self._plan = plans.read_plan(self.plan)
        return self._plan

    @property
    def plan_granularity(self) -> str | None:
        return self.plan_data["granularity"] if self.plan is not None else None

    @property
    def structured(self) -> bool:
        return bool(self.heads or self.ffn or self.layers or self.hidden or self.vocab_corpus or self.text_structured
                    or self.learn_structure or self.plan_granularity == "structured")

    @property
    def text_structured(self) -> bool:
        return bool(self.units or self.filters or self.embedding)

    def given(self, *names: str) -> dict[str, Any]:
        """Those of ``names`` that differ from their defaults, with their values: the only sign a flag was
        given (typer passes the default either way)."""
        return changed(type(self), {n: getattr(self, n) for n in names})

    def validate(self) -> PruneSettings:
        """A checked copy with scope, sparsity, schedule and importance resolved (and the plan parsed once);
        ``self`` is never changed, so the same settings can be validated and run again."""
        s = replace(self)
        s._plan = self._plan  # replace() leaves out init=False fields: keep a plan already read
        s._normalise()
        return s

    def _normalise(self) -> None:
        """:meth:`validate`'s work, on its fresh copy."""
        self._validate_search()
        if self.distill:  # fail before any work, not when recovery starts
            self.distill_config()
        else:
            refuse(self.given("distill_alpha", "temperature", "distill_hidden"),
                   "without --distill there is no distillation loss for {}: add --distill")
        lora_options(self)  # a bad rank/alpha/dropout fails before any work
        if self.lora is None:
            refuse(self.given("lora_alpha", "lora_dropout"), "{} shapes LoRA adapters: add --lora R")
        if self.scope is None:  # wanda's scores only compare within an output row (different layers' inputs differ)
            self.scope = ("local" if self.structured or self.method in SOLVER_METHODS
                          else "row" if self.method == "wanda" else "global")
        if self.damp is not None and (self.structured or self.method not in SOLVER_METHODS):
            raise PrunekitError(f"--damp dampens SparseGPT's Hessians: it goes with unstructured --method "
                                f"{', '.join(SOLVER_METHODS)}")
        self._refuse_unused()
        if self.structured:
            self._validate_structured()
            return
        if self.method not in CLASSIFIER_METHODS:
            raise PrunekitError(f"unknown pruning method {self.method!r}; choose one of "
                                f"{', '.join(CLASSIFIER_METHODS)}")
        if self.scope not in SCOPES:
            raise PrunekitError(f"unknown scope {self.scope!r}; choose {', '.join(SCOPES)}")
        if self.method in SOLVER_METHODS:
            check_schedule(self.schedule, False, self.method, solves=True)
            self._validate_solver()
        else:
            check_schedule(self.schedule, _criterion(self.method).needs_training, self.method)
        if self.threshold is not None:
            if self.schedule == "gradual":
                raise PrunekitError("--threshold works with --schedule oneshot or iterative, not gradual")
            self.sparsity = None
        else:
            if self.sparsity is None:
                self.sparsity = 0.5
            check_sparsity(self.sparsity)
        self._check_counts()
        if self.schedule == "gradual" and self.finetune_epochs <= 0:
            raise PrunekitError("the gradual schedule prunes during fine-tuning: --finetune-epochs must be > 0")
        if self.max_drop is not None and self.max_drop < 0:
            raise PrunekitError(f"--max-drop is in points and must be >= 0, got {self.max_drop}")
        if not 0.0 < self.ramp_end <= 1.0:
            raise PrunekitError(f"ramp_end must be in (0, 1], got {self.ramp_end}")

    def _refuse_unused(self) -> None:
        """Flags the chosen kind of pruning never reads are refused, naming them, instead of ignored."""
        if self.structured or self.schedule != "gradual":
            refuse(self.given("ramp_end", "prune_every"), "the gradual schedule's cubic ramp ({}) is not used "
                   + ("by structured pruning" if self.structured else f"by --schedule {self.schedule}"))
        if self.structured:
            refuse(self.given("max_drop"), "{} applies to the unstructured schedules (oneshot, iterative, "
                   "gradual); structured pruning and --learn-structure do not stop early yet")
        cut_widths = self.structured and not self.learn_structure
        if not cut_widths:
            refuse(self.given("round_to"), "{} rounds the widths structured ratios keep (--heads/--ffn/--hidden/"
                   "--units/--filters/--embedding or a structured --plan): "
                   + ("--learn-structure's gates decide them" if self.learn_structure else "none was given"))
        if not (self.heads or self.learn_structure or self.plan_granularity == "structured"):
            refuse(self.given("gqa"), "{} decides how grouped-query heads are removed: it needs --heads")
        if not self.layers:
            refuse(self.given("layer_importance"), "{} ranks the layers --layers removes: add --layers")
        if not self._uses_calibration():
            what = (f"--importance {self.importance}" if self.structured else f"--method {self.method}")
            refuse(self.given("calib_batches"), f"{{}} feeds data-driven criteria; {what} scores the weights alone")

    def _uses_calibration(self) -> bool:
        """Whether any calibration batch is read: data-driven criteria, solvers, and --layers rankings."""
        if self.learn_structure:  # the gates' warm start draws calibration batches whatever the criterion
            return True
        if self.structured:
            ranks_layers = self.layers and (self.layer_importance or DEFAULT_LAYER_SCORE) != "groups"
            return self.importance in DATA_GROUP_CRITERIA or bool(ranks_layers)
        if self.method in SOLVER_METHODS or self.method not in METHODS:
            return True  # an unknown method is refused with its own message
        criterion = _criterion(self.method)
        return criterion.uses_activations or (criterion.uses_gradients and not criterion.needs_training)

    def _check_counts(self) -> None:
        if self.steps < 1:
            raise PrunekitError(f"--steps must be at least 1, got {self.steps}")
        if self.finetune_epochs < 0:
            raise PrunekitError(f"--finetune-epochs must be >= 0, got {self.finetune_epochs}")

    def _validate_solver(self) -> None:
        """SparseGPT gives every pruned Linear the target sparsity itself (its block's, with --plan), from a
        ratio; its own settings are checked where they are defined."""
        if self.scope != "local":
            raise PrunekitError(f"{self.method} prunes each layer to the target sparsity (--scope local), "
                                f"got --scope {self.scope}")
        if self.threshold is not None:
            raise PrunekitError(f"{self.method} prunes to a sparsity ratio, not a --threshold")
        if self.damp is not None:
            OneShotSettings(method=self.method, damp=self.damp).check()

    def _validate_search(self) -> None:
        """--plan and --learn-structure decide the ratios themselves: no other ratio may be given."""
        ratios = (self.heads or self.ffn or self.layers or self.hidden or self.text_structured
                  or self.sparsity is not None or self.threshold is not None)
        if self.plan is not None:
            plan = self.plan_data
            if ratios or self.learn_structure:
                raise PrunekitError("--plan gives the per-layer ratios: do not combine it with --sparsity, "
                                    "--threshold, --heads/--ffn/--layers/--hidden or --learn-structure")
            if self.steps != 1:
                raise PrunekitError("--plan is applied in one step (--steps 1)")
            if self.importance is None:
                self.importance = plan.get("importance") or "l2"
            if plan["granularity"] == "unstructured":
                if not plan.get("block_sparsity"):
                    raise PrunekitError(f"plan {self.plan} has no block_sparsity list")
                if plan.get("sublayer_sparsity"):
                    raise PrunekitError(f"plan {self.plan} prunes attention and MLP apart (an LM profile): "
                                        "apply it with prunekit prune --task lm")
                self.schedule = "oneshot"  # the plan's per-block masks are set once, then recovered
                self.sparsity = plans.mean_sparsity(plan)
        if self.learn_structure:
            if self.budget is None:
                raise PrunekitError("--learn-structure needs a --budget, e.g. --budget params=0.5")
            if Budget.parse(self.budget).kind != "params":
                raise PrunekitError(f"--learn-structure supports params= budgets, got --budget {self.budget}")
            if ratios:
                raise PrunekitError("--learn-structure learns the ratios: do not combine it with --sparsity, "
                                    "--threshold or --heads/--ffn/--layers/--hidden")
            if self.finetune_epochs <= 0:
                raise PrunekitError("--learn-structure learns the gates while fine-tuning: --finetune-epochs must "
                                    "be > 0")
        elif self.budget is not None:
            raise PrunekitError("--budget goes with --learn-structure (or with prunekit search)")
        elif self.learn_layers:
            raise PrunekitError("--learn-layers adds layer gates to --learn-structure: add --learn-structure")
        elif self.gate_warm_start is not None:
            raise PrunekitError("--gate-warm-start sets how --learn-structure's gates start: add --learn-structure")
        if self.gate_warm_start is not None and self.gate_warm_start < 0:
            raise PrunekitError(f"--gate-warm-start must be >= 0 (a log α spread), got {self.gate_warm_start}")
        if self.importance is None:
            self.importance = "l2"

    def _validate_structured(self) -> None:
        if self.sparsity is not None or self.threshold is not None:
            raise PrunekitError("combine structured ratios (--heads/--ffn/--layers/--hidden) with --sparsity "
                                "or --threshold in two runs: prune structurally first, then unstructured")
        if self.text_structured and (self.heads or self.ffn or self.layers or self.hidden or self.vocab_corpus):
            raise PrunekitError("--units/--filters/--embedding prune LSTM/GRU/RNN and TextCNN models; "
                                "--heads/--ffn/--layers/--hidden/--vocab-corpus prune transformers: not both")
        for name in ("heads", "ffn", "hidden", "units", "filters", "embedding"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise PrunekitError(f"--{name} is the fraction removed and must be in [0, 1), got {value}")
        if self.layers < 0:
            raise PrunekitError(f"--layers is the number of layers to remove and must be >= 0, got {self.layers}")
        if self.importance not in CRITERIA:
            raise PrunekitError(f"unknown --importance {self.importance!r}; choose one of {', '.join(CRITERIA)}")
        if self.layer_importance is not None and self.layer_importance not in LAYER_SCORES:
            raise PrunekitError(f"unknown --layer-importance {self.layer_importance!r}; choose one of "
                                f"{', '.join(LAYER_SCORES)}")
        if self.scope not in ("global", "local"):
            raise PrunekitError(f"structured pruning ranks groups per layer or globally: --scope local or global, "
                                f"got {self.scope!r}")
        if self.round_to < 1:
            raise PrunekitError(f"--round-to must be a positive integer, got {self.round_to}")
        self._check_counts()

    def distill_config(self) -> DistillConfig:
        """The distillation loss these settings ask for (a validated DistillConfig)."""
        return DistillConfig(self.distill_alpha, self.temperature, hidden_weight=self.distill_hidden,
                             loss=self.distill_loss).validate()

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}


def _criterion(method: str):
    return make_importance(method)


def changed(fn: Callable[..., Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments of ``fn`` in ``values`` that differ from its defaults: how a command tells which
    options were given (typer passes every default)."""
    params = inspect.signature(fn).parameters
    return {n: v for n, v in values.items() if n in params and v != params[n].default}


def flag(name: str, value: Any = None) -> str:
    """A setting's command-line flag: ``--ramp-end``; ``--no-latency`` for a switch turned off."""
    return ("--no-" if value is False else "--") + name.replace("_", "-")


def refuse(given: Mapping[str, Any], why: str) -> None:
    """One line naming the given flags that do not apply (``why`` holds ``{}`` where they go); none: no error."""
    if given:
        raise PrunekitError(why.format(", ".join(flag(n, v) for n, v in given.items())))
