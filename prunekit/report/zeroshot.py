"""Zero-shot downstream accuracy of an in-memory causal LM through lm-evaluation-harness (``lm-eval``).

The prompts, answer choices and metrics (acc, acc_norm, LAMBADA's perplexity) are lm-eval's own task
definitions; prunekit only points each task it has a local copy of (the ``lm-eval-tasks`` and ``lambada``
assets) at that copy and keeps every hub offline, so a pruned model is scored without network access.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from prunekit import assets
from prunekit.errors import PrunekitError

_OFFLINE_ENV = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_METRICS = ("acc", "acc_norm", "perplexity")


def _check_lm_eval() -> None:
    """lm-eval is an optional dependency, and the task index prunekit reads arrived in 0.4.13."""
    try:
        from lm_eval.tasks import _yaml_loader  # noqa: F401
    except ImportError as err:
        raise PrunekitError("zero-shot evaluation needs lm-eval 0.4.13 or newer (pip install 'prunekit[lm]'): "
                            f"{err}") from err


def parse_tasks(spec: str | Sequence[str]) -> list[str]:
    """``"hellaswag, piqa"`` or a list -> task names, in order, without blanks or repeats."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    tasks = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    if not tasks:
        raise PrunekitError("--zero-shot needs at least one lm-eval task name, e.g. hellaswag,piqa,arc_easy")
    return tasks


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """No hub access while lm-eval runs: the env vars for fresh readers, ``datasets.config`` for an imported one."""
    import datasets.config as dconfig

    saved_env = {k: os.environ.get(k) for k in _OFFLINE_ENV}
    saved_cfg = {k: getattr(dconfig, k) for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if hasattr(dconfig, k)}
    os.environ.update(dict.fromkeys(_OFFLINE_ENV, "1"))
    for k in saved_cfg:
        setattr(dconfig, k, True)
    try:
        yield
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for k, v in saved_cfg.items():
            setattr(dconfig, k, v)


def _local_spec(manager: Any, task: str, log: Callable[[str], None] | None) -> dict[str, Any]:
    """lm-eval's own config of ``task`` with its data pointed at prunekit's local copy (validation split only)."""
    from lm_eval.tasks._yaml_loader import load_yaml  # the loader TaskManager uses (includes, !function)

    data = assets.ensure(assets.ZEROSHOT_TASKS[task], log=log) / task / "validation.jsonl"
    config = load_yaml(manager.task_index[task].yaml_path, resolve_func=True)
    return {**config, "dataset_path": "json", "dataset_name": None,
            "dataset_kwargs": {"data_files": {"validation": str(data)}},
            "training_split": None, "validation_split": "validation", "test_split": None, "fewshot_split": None}


def resolve_tasks(tasks: Sequence[str], include: Sequence[str | Path] = (), online: bool = False,
                  log: Callable[[str], None] | None = None) -> tuple[Any, list[str | dict[str, Any]]]:
    """lm-eval's TaskManager and one spec per task: a user's task (from ``include``), else prunekit's local copy,
    else (only when ``online``) lm-eval's stock task as it is; anything else is refused in one line."""
    _check_lm_eval()
    from lm_eval.tasks import TaskManager

    folders = [str(Path(p).expanduser()) for p in include]
    for folder in folders:
        if not Path(folder).is_dir():
            raise PrunekitError(f"--lm-eval-include {folder}: no such folder of lm-eval task YAML files")
    user = set(TaskManager(include_path=folders, include_defaults=False).all_tasks) if folders else set()
    manager = TaskManager(include_path=folders or None)
    specs: list[str | dict[str, Any]] = []
    for task in tasks:
        if task in user:
            specs.append(task)
        elif task in assets.ZEROSHOT_TASKS:
            specs.append(_local_spec(manager, task, log))
        elif online and task in manager.all_tasks:
            specs.append(task)
        elif task in manager.all_tasks:
            local = ", ".join(assets.ZEROSHOT_TASKS)
            raise PrunekitError(f"lm-eval task {task!r} has no local copy (offline: {local}): "
                                "supply it with --lm-eval-include DIR (a task YAML over local data) or run online "
                                "with --zero-shot-online")
        else:
            raise PrunekitError(f"unknown lm-eval task {task!r} (local copies: {', '.join(assets.ZEROSHOT_TASKS)}; "
                                "`lm-eval ls tasks` lists lm-eval's own)")
    return manager, specs


def _task_scores(results: dict[str, Any], samples: dict[str, Any], task: str) -> dict[str, float | int]:
    """``{"acc,none": ...}`` -> ``{"acc": ...}`` for the metrics prunekit reports, plus the examples scored."""
    row: dict[str, float | int] = {}
    for key, value in results.get(task, {}).items():
        metric, _, _filter = key.partition(",")
        base = metric.removesuffix("_stderr")
        if base in _METRICS and isinstance(value, (int, float)) and not math.isnan(value):
            row[metric] = float(value)
    row["examples"] = int(samples.get(task, {}).get("effective", 0))
    return row


def zero_shot_scores(model: Any, tokenizer: Any, tasks: str | Sequence[str], limit: int | None = None, *,
                     batch_size: int = 8, include: Sequence[str | Path] = (), online: bool = False,
                     log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Zero-shot scores of an in-memory causal LM: ``{"tasks": {task: {acc, acc_stderr, acc_norm, ...}},
    "mean_acc": ..., "limit": ..., "seconds": ...}``. ``mean_acc`` averages each task's ``acc``. ``limit`` caps the
    examples per task (lm-eval takes the first ones). The loop's prune path calls this to score a pruned model."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    names = parse_tasks(tasks)
    if limit is not None and limit < 1:
        raise PrunekitError(f"--zero-shot-limit must be at least 1, got {limit}")
    started, was_training = time.monotonic(), getattr(model, "training", False)
    with contextlib.nullcontext() if online else _offline():
        manager, specs = resolve_tasks(names, include, online, log)
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        out = simple_evaluate(model=lm, tasks=specs, task_manager=manager, limit=limit, num_fewshot=0,
                              bootstrap_iters=100, log_samples=False)
    if was_training:  # HFLM switched it to eval mode
        model.train()
    scores = {t: _task_scores(out["results"], out.get("n-samples", {}), t) for t in names}
    accs = [s["acc"] for s in scores.values() if "acc" in s]
    return {"tasks": scores, "mean_acc": sum(accs) / len(accs) if accs else None, "limit": limit,
            "offline": not online, "seconds": time.monotonic() - started}


def zero_shot_lines(result: dict[str, Any]) -> list[str]:
    """The terminal table: one row per task, accuracies in percent, then the mean."""

    def cell(row: dict[str, Any], key: str, scale: float = 100.0) -> str:
        return f"{scale * row[key]:.2f}" if key in row else "-"

    lines = [f"{'task':<16}{'acc %':>9}{'±':>7}{'acc_norm %':>12}{'±':>7}{'ppl':>11}{'n':>7}"]
    for task, row in result["tasks"].items():
        lines.append(f"{task:<16}{cell(row, 'acc'):>9}{cell(row, 'acc_stderr'):>7}{cell(row, 'acc_norm'):>12}"
                     f"{cell(row, 'acc_norm_stderr'):>7}{cell(row, 'perplexity', 1.0):>11}{row['examples']:>7}")
    mean = result["mean_acc"]
    lines.append(f"{'mean acc':<16}{'-' if mean is None else f'{100 * mean:.2f}':>9}"
                 f"   ({result['seconds']:.0f} s, limit {result['limit'] or 'none'})")
    return lines

