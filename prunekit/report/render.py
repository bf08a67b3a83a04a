"""Turn a report dict into report.json, report.md, plots and a terminal table, all from the same numbers."""

from __future__ import annotations

import io
import json
import math
import platform
import re
from collections.abc import Collection, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import PercentFormatter
from rich import box
from rich.console import Console
from rich.table import Table

from prunekit.io.atomic import write_bytes_atomic, write_json_atomic, write_text_atomic
from prunekit.report.measure import speedup

Stage = Mapping[str, Any]
MISSING = "—"
STAGES_PNG, LAYERS_PNG, TRADEOFF_PNG = "stages.png", "layer_sparsity.png", "tradeoff.png"
ZERO_SHOT_PNG = "zero_shot.png"
_COLORS = {"attention": "#4C72B0", "feed-forward": "#DD8452", "other": "#8C8C8C"}


def package_versions() -> dict[str, str | None]:
    """Versions that decide whether a result can be reproduced (None = not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("torch", "transformers", "accelerate", "prunekit", "numpy", "scikit-learn"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


# ---------------------------------------------------------------- numbers shown to people


def _is_num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _fmt(x: Any, spec: str, scale: float = 1.0) -> str:
    return format(x * scale, spec) if _is_num(x) else MISSING


def _count(n: Any) -> str:
    if not _is_num(n):
        return MISSING
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))


def _latency_keys(stages: Sequence[Stage]) -> list[str]:
    keys: dict[str, None] = {}
    for stage in stages:
        keys.update(dict.fromkeys(stage.get("latency_ms") or {}))
    return list(keys)


def stage_table(stages: Sequence[Stage]) -> tuple[list[str], list[list[str]]]:
    """Headers and formatted rows of the stage table (shared by report.md and the terminal)."""
    lat_keys = _latency_keys(stages)
    # "\n" marks where terminal headers break (report.md uses a space), keeping the table narrow
    has = {k: any(_is_num((s.get("metrics") or {}).get(k)) for s in stages)
           for k in ("accuracy", "perplexity", "pearson", "recall_at_1")}
    other = has["perplexity"] or has["pearson"] or has["recall_at_1"]
    quality = ["Accuracy\n%", "Macro-F1\n%"] if has["accuracy"] or not other else []
    quality += ["Perplexity"] if has["perplexity"] else []
    quality += ["Pearson\n×100", "Spearman\n×100", "MAE"] if has["pearson"] else []
    quality += ["Recall@1\n×100", "MRR@10\n×100", "MRPC AUC\n×100", "Cosine to\nunpruned"] if has["recall_at_1"] else []
    headers = ["Stage", *quality, "Loss", "Params\nnonzero / total", "Sparsity\n%"]
    disk = any(_is_num(s.get("disk_bytes")) for s in stages)
    headers += ["Disk\nMB"] if disk else ["Dense\nMB", "Compressed\nMB"]
    macs = any(_is_num(s.get("macs_per_token")) for s in stages)
    headers += ["MMACs\n/token"] if macs else []
    headers += [f"Latency\n{k.replace('batch_', 'b')} ms" for k in lat_keys] + ["Seconds"]
    rows = []
    for s in stages:
        m = s.get("metrics") or {}
        rows.append(
            [
                str(s.get("name", "?")),
                *([_fmt(m.get("accuracy"), ".2f", 100), _fmt(m.get("f1_macro"), ".2f", 100)]
                  if "Accuracy\n%" in quality else []),
                *([_fmt(m.get("perplexity"), ".2f")] if has["perplexity"] else []),
                *([_fmt(m.get("pearson"), ".2f", 100), _fmt(m.get("spearman"), ".2f", 100), _fmt(m.get("mae"), ".3f")]
                  if has["pearson"] else []),
                *([_fmt(m.get("recall_at_1"), ".2f", 100), _fmt(m.get("mrr_at_10"), ".2f", 100),
                   _fmt(m.get("mrpc_auc"), ".2f", 100), _fmt(m.get("mean_cosine"), ".4f")]
                  if has["recall_at_1"] else []),
                _fmt(m.get("loss"), ".4f"),
                f"{_count(s.get('params_nonzero'))} / {_count(s.get('params_total'))}",
                _fmt(s.get("sparsity"), ".1f", 100),
                *([_fmt(s.get("disk_bytes"), ".2f", 1e-6)] if disk else
                  [_fmt(s.get("size_bytes"), ".2f", 1e-6), _fmt(s.get("size_compressed_bytes"), ".2f", 1e-6)]),
                *([_fmt(s.get("macs_per_token"), ".2f", 1e-6)] if macs else []),
                *[_latency_cell(s, k) for k in lat_keys],
                _fmt(s.get("seconds"), ".1f"),
            ]
        )
    return headers, rows


def _noise(ratio: Mapping[str, Any]) -> str:
    """How far a speedup's rounds agree, and the flag when they disagree by more than the speedup."""
    if not _is_num(ratio.get("spread")):
        return ""
    pct = f"{100 * ratio['spread']:.0f} %"
    return f", rounds agree within {pct}" if ratio.get("reliable") else f", unreliable: rounds disagree by {pct}"


def _latency_cell(stage: Stage, key: str) -> str:
    """Median latency, with the rounds' spread beside it when there were several rounds."""
    cell = _fmt((stage.get("latency_ms") or {}).get(key), ".1f")
    noise = (stage.get("latency_spread") or {}).get(key)
    return f"{cell} ±{100 * noise / 2:.0f}%" if cell != MISSING and _is_num(noise) else cell


def delta_summary(stages: Sequence[Stage]) -> str | None:
    """Last stage against the first: accuracy points, size reduction and latency speedup."""
    if len(stages) < 2:
        return None
    base, final = stages[0], stages[-1]
    parts = []
    acc0, acc1 = ((s.get("metrics") or {}).get("accuracy") for s in (base, final))
    if _is_num(acc0) and _is_num(acc1):
        points = f"{100 * (acc1 - acc0):+.2f}".replace("-", "−")
        parts.append(f"accuracy {points} points")
    r0, r1 = ((s.get("metrics") or {}).get("pearson") for s in (base, final))
    if _is_num(r0) and _is_num(r1):
        parts.append(f"Pearson {100 * (r1 - r0):+.2f} points".replace("-", "−"))
    ppl0, ppl1 = ((s.get("metrics") or {}).get("perplexity") for s in (base, final))
    if _is_num(ppl0) and _is_num(ppl1) and ppl0 > 0:
        parts.append(f"perplexity {ppl0:.2f} → {ppl1:.2f} ({ppl1 / ppl0:.2f}× dense)")
    dense0, packed1 = base.get("size_bytes"), final.get("size_compressed_bytes")
    if _is_num(dense0) and _is_num(packed1) and packed1 > 0:
        mb = f"{dense0 / 1e6:.2f} MB dense → {packed1 / 1e6:.2f} MB compressed"
        parts.append(f"size {dense0 / packed1:.2f}× smaller ({mb})")
    ratios = (speedup(stages) or {}).get("by_batch", {})
    speedups = [f"{r['ratio']:.2f}× ({k.replace('batch_', 'b')}{_noise(r)})" for k, r in ratios.items()]
    if speedups:
        macs0, macs1 = base.get("macs_per_token"), final.get("macs_per_token")
        bound = f" (MACs ratio {macs0 / macs1:.2f}×)" if _is_num(macs0) and _is_num(macs1) and macs1 > 0 else ""
        parts.append("latency speedup " + ", ".join(speedups) + bound)
    if not parts:
        return None
    return f"{final.get('name', 'final')} vs {base.get('name', 'baseline')}: " + " · ".join(parts)


# ---------------------------------------------------------------- module names and plots

_SHORTEN = [
    (re.compile(r"^(?:.*?\.)?(?:layers?|h|blocks?)\.(\d+)\."), r"L\1."),
    (re.compile(r"\battention\.self\."), "attn."),
    (re.compile(r"\battention\.output\.dense$"), "attn.out"),
    (re.compile(r"\b(?:self_attn|attention)\."), "attn."),
    (re.compile(r"\bintermediate\.dense$"), "ffn.in"),
    (re.compile(r"\boutput\.dense$"), "ffn.out"),
    (re.compile(r"^(?:.*\.)?pooler\.dense$"), "pooler"),
]


def shorten_module_name(name: str) -> str:
    """``bert.encoder.layer.3.attention.self.query`` → ``L3.attn.query`` (readable plot labels)."""
    for pattern, repl in _SHORTEN:
        name = pattern.sub(repl, name)
    return name


def _short_names(names: Sequence[str]) -> list[str]:
    """Shortened names, falling back to the full name wherever shortening would make duplicates."""
    short = [shorten_module_name(n) for n in names]
    dupes = {s for s in short if short.count(s) > 1}
    return [full if s in dupes else s for s, full in zip(short, names, strict=True)]


def _kind(short_name: str) -> str:
    if "attn" in short_name:
        return "attention"
    if re.search(r"ffn|mlp|fc|intermediate", short_name):
        return "feed-forward"
    return "other"


def save_png(fig: Figure, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130)
    write_bytes_atomic(path, buf.getvalue())


def tidy_axes(ax) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_axisbelow(True)


def plot_layer_sparsity(layer_sparsity: Mapping[str, float], path: Path) -> None:
    """Horizontal bars of per-module sparsity, top to bottom in the dict's (model) order."""
    names = _short_names(list(layer_sparsity))
    values = np.array([100.0 * v for v in layer_sparsity.values()])
    kinds = [_kind(n) for n in names]
    fig = Figure(figsize=(7.5, max(2.4, 0.24 * len(values) + 1.3)), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(values))
    bars = ax.barh(y, values, height=0.72, color=[_COLORS[k] for k in kinds])
    ax.bar_label(bars, fmt="%.0f%%", padding=2, fontsize=7)
    ax.set_yticks(y, names, fontsize=8 if len(values) <= 40 else 7)
    ax.set_ylim(len(values) - 0.4, -0.6)  # model order top to bottom, no empty margins
    ax.set_xlim(0, 110)
    ax.set_xticks(range(0, 101, 20))
    ax.xaxis.set_major_formatter(PercentFormatter())
    mean = ax.axvline(values.mean(), color="black", lw=1, ls="--", label=f"mean over modules {values.mean():.1f}%")
    handles = [Patch(color=_COLORS[k], label=k) for k in _COLORS if k in kinds]
    fig.legend(handles=[*handles, mean], loc="outside lower center", ncols=len(handles) + 1, fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel("weights that are exactly zero")
    ax.set_title("Sparsity per layer (final model)")
    tidy_axes(ax)
    save_png(fig, path)


def plot_stages(stages: Sequence[Stage], path: Path) -> None:
    """Accuracy and file size per stage, side by side: what pruning cost and what it bought."""
    names = [str(s.get("name", "?")) for s in stages]
    x = np.arange(len(stages))

    def col(get) -> np.ndarray:
        return np.array([v if _is_num(v := get(s)) else np.nan for s in stages], dtype=float)

    acc = 100 * col(lambda s: (s.get("metrics") or {}).get("accuracy"))
    ppl = col(lambda s: (s.get("metrics") or {}).get("perplexity"))
    show_ppl = bool(np.isnan(acc).all() and not np.isnan(ppl).all())
    dense = col(lambda s: s.get("size_bytes")) / 1e6
    packed = col(lambda s: s.get("size_compressed_bytes")) / 1e6
    fig = Figure(figsize=(min(max(8.0, 0.9 * len(stages) + 4), 20.0), 3.6), layout="constrained")
    ax_acc, ax_size = fig.subplots(1, 2)
    if show_ppl:  # language models: lower is better
        bars = ax_acc.bar(x, ppl, color="#C44E52", width=0.6)
        ax_acc.bar_label(bars, labels=[_fmt(p, ".1f") for p in ppl], padding=2, fontsize=8)
        ax_acc.set_ylim(0, np.nanmax(ppl) * 1.2)
        ax_acc.set_ylabel("perplexity (lower is better)")
        ax_acc.set_title("Perplexity per stage")
    else:
        bars = ax_acc.bar(x, acc, color="#4C72B0", width=0.6)
        ax_acc.bar_label(bars, labels=[_fmt(a, ".1f") + "%" if _is_num(a) else "" for a in acc], padding=2,
                         fontsize=8)
        ax_acc.set_ylim(0, 110)
        ax_acc.set_yticks(range(0, 101, 20))
        ax_acc.yaxis.set_major_formatter(PercentFormatter())
        ax_acc.set_ylabel("accuracy")
        ax_acc.set_title("Accuracy per stage")
    w = 0.38
    ax_size.bar(x - w / 2, dense, width=w, color="#C7C7C7", label="dense")
    bars = ax_size.bar(x + w / 2, packed, width=w, color="#55A868", label="compressed")
    ax_size.bar_label(bars, labels=[_fmt(p, ".1f") if _is_num(p) else "" for p in packed], padding=2, fontsize=8)
    ax_size.set_ylim(0, np.nanmax([*dense, *packed, 1e-9]) * 1.3)
    ax_size.set_ylabel("file size (MB)")
    ax_size.set_title("Checkpoint size per stage")
    ax_size.legend(fontsize=8, loc="upper right", ncols=2, frameon=False)
    rotate = 25 if len(stages) > 4 else 0
    for ax in (ax_acc, ax_size):
        ax.set_xticks(x, names, rotation=rotate, ha="right" if rotate else "center")
        ax.grid(axis="y", alpha=0.3)
        tidy_axes(ax)
    save_png(fig, path)


def plot_tradeoff(stages: Sequence[Stage], path: Path) -> bool:
    """Quality against size on disk and against latency (largest batch measured), one point per stage,
    joined in stage order: where each stage moved the model. False (nothing written) without the data."""
    keys = _latency_keys(stages)
    lat_key = max(keys, key=lambda k: int(re.sub(r"\D", "", k) or 0)) if keys else None
    acc = np.array([100 * v if _is_num(v := (s.get("metrics") or {}).get("accuracy")) else np.nan for s in stages])
    size = np.array([v / 1e6 if _is_num(v := s.get("disk_bytes", s.get("size_bytes"))) else np.nan for s in stages])
    lat = np.array([v if _is_num(v := (s.get("latency_ms") or {}).get(lat_key)) else np.nan for s in stages])
    if np.isnan(acc).all() or np.isnan(size).all():
        return False
    names = [str(s.get("name", "?")) for s in stages]
    panels = [(size, "size on disk (MB)", "Accuracy against size")]
    if not np.isnan(lat).all():
        panels.append((lat, f"latency {lat_key.replace('batch_', 'batch ')} (ms)", "Accuracy against latency"))
    fig = Figure(figsize=(5.2 * len(panels), 4.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (x, label, title) in zip(axes, panels, strict=True):
        ok = ~(np.isnan(x) | np.isnan(acc))
        ax.plot(x[ok], acc[ok], "-", color="#C7C7C7", zorder=1)
        ax.scatter(x[ok], acc[ok], color="#4C72B0", zorder=2)
        for xi, yi, n, good in zip(x, acc, names, ok, strict=True):
            if good:
                ax.annotate(n, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlim(left=0, right=np.nanmax(x[ok]) * 1.15 if ok.any() else 1)
        ax.set_xlabel(label + " (left is better)")
        ax.set_ylabel("test accuracy %")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        tidy_axes(ax)
    save_png(fig, path)
    return True


# ---------------------------------------------------------------- report files


def plot_zero_shot(result: dict[str, Any], path: Path) -> None:
    """Bars of acc and acc_norm per task, with their standard errors."""
    tasks = list(result["tasks"])
    x = np.arange(len(tasks))
    fig = Figure(figsize=(max(4.0, 1.1 * len(tasks) + 1.5), 3.4), layout="constrained")
    ax = fig.add_subplot()
    for offset, key in ((-0.2, "acc"), (0.2, "acc_norm")):
        rows = [result["tasks"][t] for t in tasks]
        ax.bar(x + offset, [100 * r.get(key, np.nan) for r in rows], 0.4, label=key,
               yerr=[100 * r.get(f"{key}_stderr", 0.0) for r in rows], capsize=2)
    ax.set_xticks(x, tasks, rotation=20)
    ax.set_ylabel("accuracy %")
    ax.set_title("zero-shot (lm-eval)")
    ax.legend(frameon=False)
    tidy_axes(ax)
    save_png(fig, path)


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list | tuple):
        return ", ".join(_value(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(v, separators=(",", ":"), default=str)
    return str(v)


def _flatten(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted keys (``prune.method``), so each fits in one table cell."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _settings_md(settings: Mapping[str, Any], seed: Any) -> str:
    items = _flatten({**settings, "seed": seed} if seed is not None else settings)
    cells = [f"`{k}={_value(v)}`" for k, v in items.items()]
    if len(cells) <= 8 and sum(map(len, cells)) <= 160:
        return "**Settings:** " + " · ".join(cells)
    rows = [f"| {k} | `{_value(v)}` |" for k, v in items.items()]
    return "\n".join(["| Setting | Value |", "|---|---|", *rows])


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    align = ["---"] + ["--:"] * (len(headers) - 1)
    lines = [[h.replace("\n", " ") for h in headers], align, *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def _layer_summary(layer_sparsity: Mapping[str, float]) -> str:
    items = sorted(layer_sparsity.items(), key=lambda kv: kv[1])
    (lo_name, lo), (hi_name, hi) = items[0], items[-1]
    median = float(np.median([v for _, v in items]))
    return (
        f"{len(items)} modules: median {100 * median:.1f} % zeros, "
        f"least {100 * lo:.1f} % (`{lo_name}`), most {100 * hi:.1f} % (`{hi_name}`)."
    )


def _costs_md(report: Mapping[str, Any]) -> str:
    """Wall time, peak memory and bytes on disk of a one-shot run (LM pruning), as a short list."""
    lines = []
    if _is_num(sec := report.get("prune_seconds")):
        lines.append(f"- Pruning took **{sec:.1f} s** (calibration included).")
    mem = report.get("peak_memory") or {}
    if _is_num(peak := mem.get("peak_rss_bytes")) and peak:
        model = mem.get("model_fp32_bytes")
        rel = f" ({peak / model:.2f}× the fp32 model)" if _is_num(model) and model else ""
        extra = mem.get("peak_extra_bytes")
        more = f"; {extra / 1e9:.2f} GB above what was resident before pruning" if _is_num(extra) else ""
        lines.append(f"- Peak memory: **{peak / 1e9:.2f} GB** process RSS{rel}{more}.")
    if _is_num(cuda := mem.get("cuda_peak_bytes")):
        lines.append(f"- Peak accelerator memory: {cuda / 1e9:.2f} GB.")
    disk = report.get("disk") or {}
    if _is_num(w := disk.get("weights_bytes")) and _is_num(d := disk.get("dense_bytes")):
        lines.append(f"- On disk: **{w / 1e6:.1f} MB** of weights (`{disk.get('weights_file')}`, {disk.get('format')}) "
                     f"vs {d / 1e6:.1f} MB as a dense checkpoint.")
    if check := report.get("reload_check"):
        lines.append(f"- Reload check ({check.get('loader')}): max |Δ logit| {check.get('max_abs_logit_diff', 0):.1e}.")
    return "\n".join(lines)


def _zero_shot_md(zero_shot: Mapping[str, Any]) -> str:
    """One row per lm-eval task (accuracies in %, ± their standard errors), then the mean accuracy."""
    def pct(row: Mapping[str, Any], key: str) -> str:
        if key not in row:
            return MISSING
        return f"{_fmt(row[key], '.2f', 100)} ± {_fmt(row.get(key + '_stderr'), '.2f', 100)}"

    rows = [[task, pct(row, "acc"), pct(row, "acc_norm"), _fmt(row.get("perplexity"), ".2f"),
             _count(row.get("examples"))] for task, row in zero_shot["tasks"].items()]
    table = _md_table(["Task", "acc %", "acc_norm %", "Perplexity", "Examples"], rows)
    return f"{table}\n\nMean accuracy: **{_fmt(zero_shot.get('mean_acc'), '.2f', 100)} %**."


def render_markdown(report: Mapping[str, Any], images: Collection[str] = ()) -> str:
    """report.md text; ``images`` names the PNG files already written next to it."""
    stages = report.get("stages") or []
    parts = ["# prunekit report", ""]
    if report.get("command"):
        parts += [f"`{report['command']}`", ""]
    if stages or not report.get("zero_shot"):
        parts += ["## Stages", "", _md_table(*stage_table(stages)), ""]
    rounds = max((len(r) for s in stages for r in (s.get("latency_rounds") or {}).values()), default=0)
    if rounds > 1:
        parts += [f"<sub>Latency: median of {rounds} rounds, every stage timed in turn in each round at the end "
                  "of the run; ± is half the range of the rounds.</sub>", ""]
    if delta := delta_summary(stages):
        parts += [f"**Δ vs baseline** — {delta}", ""]
    if stopped := report.get("stopped"):
        parts += [f"**Stopped early** at step {stopped.get('step', '?')}: {stopped.get('reason', '?')}", ""]
    if STAGES_PNG in images:
        parts += [f"![Quality and size per stage]({STAGES_PNG})", ""]
    if TRADEOFF_PNG in images:
        parts += [f"![Quality against size and latency]({TRADEOFF_PNG})", ""]
    if costs := _costs_md(report):
        parts += ["## What pruning cost", "", costs, ""]
    if layer_sparsity := report.get("layer_sparsity"):
        parts += ["## Sparsity per layer", "", _layer_summary(layer_sparsity), ""]
        if LAYERS_PNG in images:
            parts += [f"![Sparsity per layer]({LAYERS_PNG})", ""]
    if zero_shot := report.get("zero_shot"):
        parts += ["## Zero-shot (lm-eval)", "", _zero_shot_md(zero_shot), ""]
        if ZERO_SHOT_PNG in images:
            parts += [f"![Zero-shot accuracy per task]({ZERO_SHOT_PNG})", ""]
    # Settings last: people come for the outcome; the exact settings are there to reproduce it.
    parts += ["## Settings", "", _settings_md(report.get("settings") or {}, report.get("seed")), ""]
    if versions := report.get("versions"):
        parts += ["<sub>" + " · ".join(f"{k} {v}" for k, v in versions.items()) + "</sub>", ""]
    return "\n".join(parts)


def write_report(out_dir: str | Path, report: Mapping[str, Any]) -> None:
    """Write report.json, report.md and the PNG plots into ``out_dir`` (each file atomically)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "report.json", report)
    images = []
    if report.get("stages"):
        plot_stages(report["stages"], out_dir / STAGES_PNG)
        images.append(STAGES_PNG)
        if report.get("command") == "run" and plot_tradeoff(report["stages"], out_dir / TRADEOFF_PNG):
            images.append(TRADEOFF_PNG)
    if report.get("layer_sparsity"):
        plot_layer_sparsity(report["layer_sparsity"], out_dir / LAYERS_PNG)
        images.append(LAYERS_PNG)
    if report.get("zero_shot"):
        plot_zero_shot(report["zero_shot"], out_dir / ZERO_SHOT_PNG)
        images.append(ZERO_SHOT_PNG)
    write_text_atomic(out_dir / "report.md", render_markdown(report, images))


def print_stage_table(stages: Sequence[Stage], console: Console | None = None) -> None:
    """The report.md stage table in the terminal; stages become columns if the terminal is too narrow."""
    console = console or Console()
    headers, rows = stage_table(stages)
    widths = [max([len(w) for w in h.split("\n")] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    table = Table(title="prunekit stages", box=box.SIMPLE_HEAD, title_justify="left")
    if sum(widths) + 3 * len(widths) <= console.width:
        for i, (header, width) in enumerate(zip(headers, widths, strict=True)):
            table.add_column(header, justify="right" if i else "left", style=None if i else "bold", min_width=width)
        for row in rows:
            table.add_row(*row)
    else:  # before/after layout: one row per quantity, one column per stage
        table.add_column("")
        for row in rows:
            table.add_column(row[0], justify="right", header_style="bold")
        for i, header in enumerate(headers[1:], start=1):
            table.add_row(header.replace("\n", " "), *(row[i] for row in rows))
    console.print(table)
    if delta := delta_summary(stages):
        console.print(f"Δ {delta}")
