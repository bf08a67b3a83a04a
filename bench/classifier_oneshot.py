"""Benchmark: one-shot SparseGPT vs Wanda on the fine-tuned MiniLM classifier (movie reviews).

Same cached dense baseline (``default_baseline``), same prunable weights (the encoder blocks' Linears),
same calibration examples (--calib-batches × batch size training snippets), same recovery (one epoch,
AdamW at the learning rate shown, batch 32) for every row. Each row reports test accuracy right after
pruning (before recovery: what the weight update buys) and after recovery. Writes
bench/results/classifier_oneshot.{md,json} after every row.

    python bench/classifier_oneshot.py [--sparsities 0.5,0.7] [--methods sparsegpt,wanda] [--lr 2e-4]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from _results import write_results  # bench/ is on sys.path when a script runs

from prunekit.config import PruneSettings
from prunekit.pipeline import DEFAULT_DATA, default_baseline, prune
from prunekit.report.render import package_versions

WORK = Path(__file__).resolve().parent / "work"


def row(model: Path, method: str, sparsity: float, args: argparse.Namespace) -> dict:
    out = WORK / f"classifier-oneshot-{method}-{sparsity}"
    shutil.rmtree(out, ignore_errors=True)
    settings = PruneSettings(method=method, sparsity=sparsity, schedule="oneshot", finetune_epochs=args.epochs,
                             lr=args.lr, batch_size=32, calib_batches=args.calib_batches, latency=False)
    start = time.perf_counter()
    report = prune(str(model), DEFAULT_DATA, out, settings, seed=args.seed)
    stages = {s["name"]: s for s in report["stages"]}
    return {
        "method": method, "sparsity": sparsity, "scope": report["settings"]["prune"]["scope"],
        "baseline_accuracy": stages["baseline"]["metrics"]["accuracy"],
        "pruned_accuracy": stages["pruned"]["metrics"]["accuracy"],
        "final_accuracy": stages["final"]["metrics"]["accuracy"],
        "final_f1_macro": stages["final"]["metrics"]["f1_macro"],
        "achieved_sparsity": stages["final"]["sparsity"],
        "layer_sparsity_min": min(report["layer_sparsity"].values()),
        "layer_sparsity_max": max(report["layer_sparsity"].values()),
        "prune_seconds": stages["pruned"]["seconds"], "recovery_seconds": stages["final"]["seconds"],
        "wall_seconds": time.perf_counter() - start, "n_test": report["data"]["test"],
        "versions": package_versions(),
    }


def write(rows: list[dict], args: argparse.Namespace) -> None:
    base = rows[0]["baseline_accuracy"]
    lines = [
        "# One-shot SparseGPT vs Wanda on a classifier: MiniLM (all-MiniLM-L6-v2) on movie reviews",
        "",
        f"Test split ({rows[0]['n_test']} snippets), dense baseline {100 * base:.2f} % (fine-tuned 1 epoch, "
        f"cached); pruned: the encoder blocks' Linear weights, {args.calib_batches} × 32 training snippets of "
        f"calibration; recovery: {args.epochs:g} epoch at lr {args.lr:g}, batch 32, max length 64, seed "
        f"{args.seed}. `python bench/classifier_oneshot.py` reproduces it (wall times from a shared machine).",
        "",
        "| sparsity | method (scope) | after pruning % | after recovery % | Δ vs dense | per-layer sparsity "
        "| prune s | recovery s |",
        "| --: | --- | --: | --: | --: | --- | --: | --: |",
    ]
    for r in rows:
        lines.append(
            f"| {100 * r['sparsity']:.0f} % | {r['method']} ({r['scope']}) | {100 * r['pruned_accuracy']:.2f} | "
            f"{100 * r['final_accuracy']:.2f} | {100 * (r['final_accuracy'] - base):+.2f} | "
            f"{100 * r['layer_sparsity_min']:.1f}–{100 * r['layer_sparsity_max']:.1f} % | "
            f"{r['prune_seconds']:.0f} | {r['recovery_seconds']:.0f} |"
        )
    write_results("classifier_oneshot", lines, {"args": vars(args), "rows": rows})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sparsities", default="0.5,0.7")
    ap.add_argument("--methods", default="sparsegpt,wanda")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--calib-batches", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    model = default_baseline(args.seed)
    rows: list[dict] = []
    for sparsity in (float(x) for x in args.sparsities.split(",")):
        for method in args.methods.split(","):
            rows.append(row(model, method, sparsity, args))
            write(rows, args)


if __name__ == "__main__":
    main()
