"""Plots of the ratio search: sensitivity curves / heat-map, the annealing trace, the L0 gates' trajectory."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from prunekit.report.metrics import metric_of
from prunekit.report.render import save_png, tidy_axes


def plot_sensitivity(tables: Sequence[Any], path: Path) -> None:
    """Per table: a heat-map of the metric (unit × ratio) beside its curves, one line per unit."""
    fig = Figure(figsize=(11, 3.4 * len(tables) + 0.4), layout="constrained")
    axes = fig.subplots(len(tables), 2, squeeze=False)
    for (ax_h, ax_c), t in zip(axes, tables, strict=True):
        ratios = list(t.ratios)
        grid = np.array([[t.values.get(u, {}).get(f"{r:g}", np.nan) for r in ratios] for u in t.units], dtype=float)
        cmap = "viridis" if t.higher_is_better else "viridis_r"
        im = ax_h.imshow(grid, aspect="auto", cmap=cmap)
        ax_h.set_xticks(range(len(ratios)), [f"{r:g}" for r in ratios])
        ax_h.set_yticks(range(len(t.units)), t.units, fontsize=7 if len(t.units) > 16 else 8)
        ax_h.set_xlabel("ratio removed")
        ax_h.set_title(f"{t.granularity}: validation {t.metric} (baseline {t.baseline:.4g})")
        fig.colorbar(im, ax=ax_h, shrink=0.8)
        for u in t.units:
            xs = [0.0] + [r for r in ratios if f"{r:g}" in t.values.get(u, {})]
            ys = [t.baseline] + [t.values[u][f"{r:g}"] for r in xs[1:]]
            ax_c.plot(xs, ys, marker="o", ms=3, lw=1, label=u)
        ax_c.axhline(t.baseline, color="black", lw=0.8, ls="--")
        ax_c.set_xlabel("ratio removed (one unit at a time)")
        ax_c.set_ylabel(t.metric)
        if t.metric == "perplexity":
            ax_c.set_yscale("log")
        if len(t.units) <= 12:
            ax_c.legend(fontsize=6, ncols=2, frameon=False)
        ax_c.grid(alpha=0.3)
        tidy_axes(ax_c)
    save_png(fig, path)


def plot_trace(result: Any, path: Path) -> None:
    """Proxy score of every proposed plan (accepted vs rejected) and of the current one, per step; the
    real evaluations at the end."""
    tr = result.trace
    fig = Figure(figsize=(9, 3.8), layout="constrained")
    ax, ax_r = fig.subplots(1, 2, width_ratios=[3, 1])
    metric = result.metric
    if tr:
        steps = np.array([t["step"] for t in tr])
        prop = np.array([metric_of(metric, t["proposed"]) for t in tr])
        cur = np.array([metric_of(metric, t["current"]) for t in tr])
        acc = np.array([t["accepted"] for t in tr])
        ax.scatter(steps[~acc], prop[~acc], s=3, color="#C7C7C7", label="rejected", rasterized=True)
        ax.scatter(steps[acc], prop[acc], s=3, color="#4C72B0", label="accepted", rasterized=True)
        ax.plot(steps, cur, color="black", lw=1, label="current")
        if metric == "perplexity":
            ax.set_yscale("log")
    method = result.extra.get("method")
    ax.set_xlabel("profile screened" if method else "annealing step")
    ax.set_ylabel(f"predicted validation {metric}")
    ax.set_title(f"{method}, budget {result.budget}" if method else
                 f"Simulated annealing, budget {result.budget} (T0 = {result.t0:.3g})")
    ax.legend(fontsize=8, frameon=False, markerscale=3)
    ax.grid(alpha=0.3)
    tidy_axes(ax)
    labels = [c.label for c in result.candidates]
    real = [c.real for c in result.candidates]
    pred = [metric_of(metric, c.proxy) for c in result.candidates]
    x = np.arange(len(labels))
    ax_r.scatter(x, pred, marker="x", color="#C44E52", label="predicted")
    ax_r.scatter(x, real, marker="o", color="#55A868", label="measured")
    ax_r.axhline(result.baseline, color="black", lw=0.8, ls="--", label="baseline")
    ax_r.set_xticks(x, [lab[:4] for lab in labels], rotation=60, fontsize=7)
    ax_r.set_title("real evaluations")
    ax_r.legend(fontsize=7, frameon=False)
    tidy_axes(ax_r)
    save_png(fig, path)


def plot_gates(trajectory: Sequence[Mapping[str, Any]], final: Mapping[str, Any], path: Path) -> None:
    """L0 gates: expected kept fraction vs the target per step, and the final per-layer widths."""
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax, ax_w = fig.subplots(1, 2)
    if trajectory:
        steps = [t["step"] for t in trajectory]
        ax.plot(steps, [t["expected_keep"] for t in trajectory], label="expected kept fraction")
        ax.plot(steps, [t["target"] for t in trajectory], ls="--", color="black", label="target")
        ax2 = ax.twinx()
        ax2.plot(steps, [t.get("lambda", t.get("lambda1")) for t in trajectory], color="#C44E52", lw=0.8,
                 label="λ")
        ax2.set_ylabel("λ", color="#C44E52")
    ax.set_xlabel("training step")
    ax.set_ylabel("kept fraction of searched params")
    ax.set_title("L0 gates: expected size")
    ax.legend(fontsize=8, frameon=False)
    tidy_axes(ax)
    heads, ffn = final.get("heads", []), final.get("ffn", [])
    x = np.arange(len(heads))
    ax_w.bar(x - 0.2, [h / max(final.get("heads_dense", [1])[i], 1) for i, h in enumerate(heads)], width=0.4,
             label="heads kept")
    ax_w.bar(x + 0.2, [f / max(final.get("ffn_dense", [1])[i], 1) for i, f in enumerate(ffn)], width=0.4,
             label="FFN kept")
    ax_w.set_xticks(x, [str(i) for i in x])
    ax_w.set_xlabel("layer (original index)")
    ax_w.set_ylabel("fraction kept")
    ax_w.set_title("final widths")
    ax_w.legend(fontsize=8, frameon=False)
    tidy_axes(ax_w)
    save_png(fig, path)
