"""Benchmark: text regression. MiniLM fine-tuned on the movie-review snippets' human sentiment scores
(-4 … 4), against the same model with 50 % of its heads and 50 % of its FFN neurons removed and one
epoch of recovery with distillation (MSE to the fine-tuned model's outputs).

Both rows go through the public API exactly as ``prunekit finetune/prune --task regression`` do. Latency is
measured at the end for both models in interleaved rounds (batch 1 and 32, sequence 128, threads = cores),
so the speedups are ratios measured in the same run on the same machine state. Writes
bench/results/regression.{md,json}.

    python bench/regression.py [--epochs 1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import torch
from _results import write_results  # bench/ is on sys.path when a script runs

import prunekit
from prunekit.config import DataOptions, PruneSettings, TrainOptions
from prunekit.io.hf import load_tokenizer
from prunekit.io.packed import dense_size_bytes
from prunekit.pipeline import finetune, prune
from prunekit.report.measure import count_params, interleaved_latency, latency_fields, macs_per_token, model_timer
from prunekit.runtime import default_device
from prunekit.tasks import get_task

ROOT = Path(__file__).resolve().parent
WORK = ROOT / "work"
SEQ = 128
TASK = get_task("regression")


def _fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=float, default=1.0, help="fine-tuning epochs, and recovery epochs")
    ap.add_argument("--lr", type=float, default=2e-4, help="recovery learning rate (as bench/structured.py)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved latency rounds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-train-samples", type=int, default=None, help="quick smoke runs only")
    ap.add_argument("--max-eval-samples", type=int, default=None, help="quick smoke runs only")
    ap.add_argument("--quiet-wait", type=float, default=600.0,
                    help="seconds to wait at most for a 1-min load average below 1.5 before timing")
    args = ap.parse_args()
    data = DataOptions("movie-review-scores", max_length=64, max_train_samples=args.max_train_samples,
                       max_eval_samples=args.max_eval_samples)

    start = time.perf_counter()
    dense_dir = _fresh(WORK / "regression-dense")
    tuned = finetune("all-MiniLM-L6-v2", data, dense_dir, TrainOptions(epochs=args.epochs), seed=args.seed,
                     latency=False, task="regression")
    tune_seconds = time.perf_counter() - start

    start = time.perf_counter()
    half_dir = _fresh(WORK / "regression-half")
    settings = PruneSettings(heads=0.5, ffn=0.5, importance="taylor", distill=True, finetune_epochs=args.epochs,
                             lr=args.lr, latency=False)
    pruned = prune(str(dense_dir), data, half_dir, settings, seed=args.seed, task="regression")
    prune_seconds = time.perf_counter() - start

    stages = {s["name"]: s for s in pruned["stages"]}
    rows = [("MiniLM fine-tuned (dense)", tuned["stages"][-1], None, dense_dir, tune_seconds),
            ("prunekit: 50 % heads + 50 % FFN (taylor, distil)", stages["final"], stages["pruned"], half_dir,
             prune_seconds)]
    models = [prunekit.load(folder).to(default_device()).eval() for *_, folder, _ in rows]

    waited = 0.0
    while os.getloadavg()[0] >= 1.5 and waited < args.quiet_wait:
        time.sleep(20)
        waited += 20
    args.load_average_at_latency = round(os.getloadavg()[0], 2)
    make = TASK.latency_inputs(load_tokenizer(str(dense_dir)), models[0].config.vocab_size, default_device())
    samples = interleaved_latency({i: model_timer(m, make, seq_len=SEQ, min_seconds=1.0)
                                   for i, m in enumerate(models)}, args.rounds)
    table = []
    for i, ((label, rec, before, _, seconds), model) in enumerate(zip(rows, models, strict=True)):
        total, _ = count_params(model)
        m = rec["metrics"]
        table.append({
            "method": label, "pearson": m["pearson"], "spearman": m["spearman"], "mae": m["mae"], "mse": m["mse"],
            "pearson_before_recovery": (before or rec)["metrics"]["pearson"],
            "params": total, "size_bytes": dense_size_bytes(model.state_dict()),
            "macs_per_token": macs_per_token(model, SEQ),
            "latency_ms": latency_fields(samples[i])["latency_ms"],
            "seconds": seconds,
        })
    args.data = {k: pruned["data"][k] for k in ("source", "train", "validation", "test", "label_column")}
    write(table, args)


def write(table: list[dict], args) -> None:
    d = table[0]
    n = args.data
    lines = [
        "# Text regression: MiniLM (all-MiniLM-L6-v2) on movie-review sentiment scores",
        "",
        f"Data: `movie-review-scores`, Pang & Lee snippets with their human scores (-4 … 4; "
        f"{n['train']:,} train / {n['validation']:,} validation / {n['test']:,} test snippets used), metrics "
        f"on the {n['test']:,} test snippets. `--task regression`: a one-output head, MSE loss. Fine-tuned "
        f"{args.epochs:g} epoch(s) (AdamW, default lr), batch 32, max length 64; the pruned row starts from it and "
        f"recovers {args.epochs:g} epoch(s) at lr {args.lr:g}, distilling the fine-tuned model's outputs (MSE). "
        f"Latency: median of {args.rounds} interleaved rounds, sequence {SEQ}, {torch.get_num_threads()} threads "
        f"(1-min load average when latency started: {args.load_average_at_latency}). `python bench/regression.py`.",
        "",
        *([f"**Reduced run** (`--max-train-samples {args.max_train_samples} --max-eval-samples "
           f"{args.max_eval_samples}`): a seeded subset of the splits, so the numbers are below what the full "
           "data gives; rerun without these flags for the full benchmark.", ""]
          if args.max_train_samples or args.max_eval_samples else []),
        "| method | Pearson | Spearman | MAE | Pearson before recovery | params M | MACs ratio | speedup b1 | "
        "speedup b32 | latency b1 / b32 ms | wall s |",
        "| --- | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: |",
    ]
    for r in table:
        lat, lat0 = r["latency_ms"], d["latency_ms"]
        lines.append(
            f"| {r['method']} | {r['pearson']:.4f} | {r['spearman']:.4f} | {r['mae']:.3f} | "
            f"{r['pearson_before_recovery']:.4f} | {r['params'] / 1e6:.2f} | "
            f"{d['macs_per_token'] / r['macs_per_token']:.2f}× | "
            f"{lat0['batch_1'] / lat['batch_1']:.2f}× | {lat0['batch_32'] / lat['batch_32']:.2f}× | "
            f"{lat['batch_1']:.1f} / {lat['batch_32']:.0f} | {r['seconds']:.0f} |"
        )
    lines += ["", "Wall s: fine-tuning (dense row) and prune + measure + recovery + save (pruned row), "
              "evaluation included."]
    write_results("regression", lines, {"args": vars(args), "rows": table})


if __name__ == "__main__":
    main()
