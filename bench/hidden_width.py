"""Benchmark: why a narrower hidden width speeds MiniLM up less than its MACs say.

Prunes only the hidden (model) width of the fine-tuned MiniLM (L2 ranking, no recovery: accuracy is not
the point here), then measures, in interleaved rounds, latency at batch 1 and 32 (sequence 128), where
the batch-32 time goes per operator (torch.profiler), and how fast the GEMMs of one layer run at each
width (GFLOP/s). Writes bench/results/hidden_width.{md,json}.

    python bench/hidden_width.py [--widths 288,256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from _results import write_results  # bench/ is on sys.path when a script runs
from torch.profiler import ProfilerActivity, profile
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from prunekit.importance.groups import group_scores
from prunekit.pipeline import default_baseline
from prunekit.prune import apply_plan, plan_from_ratios
from prunekit.report.measure import interleaved_latency, latency_fields, macs_per_token, model_timer
from prunekit.tasks.classification import latency_inputs

SEQ = 128
OPS = {"aten::addmm": "Linear (addmm)", "aten::_scaled_dot_product_flash_attention_for_cpu": "attention (SDPA)",
       "aten::gelu": "GELU", "aten::copy_": "copies", "aten::native_layer_norm": "LayerNorm", "aten::add": "adds"}


def op_times(model: torch.nn.Module, inputs: dict, reps: int = 3) -> dict[str, float]:
    """Self CPU ms per forward pass, by operator."""
    with torch.inference_mode():
        model(**inputs)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(reps):
                model(**inputs)
    return {e.key: e.self_cpu_time_total / 1e3 / reps for e in prof.key_averages()}


def gemm_gflops(rows: int, k: int, n: int, reps: int = 20) -> float:
    a, w, b = torch.randn(rows, k), torch.randn(n, k), torch.randn(n)
    with torch.inference_mode():
        for _ in range(3):
            F.linear(a, w, b)
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            F.linear(a, w, b)
            times.append(time.perf_counter() - t)
    return 2 * rows * k * n / statistics.median(times) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="288,256")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="default: all cores")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    base = default_baseline(0)
    dense = AutoModelForSequenceClassification.from_pretrained(base).eval()
    tokenizer = AutoTokenizer.from_pretrained(base)
    width = dense.config.hidden_size
    scores = group_scores(dense, "l2", layers="groups")
    models = {f"dense {width}": dense}
    for keep in (int(w) for w in args.widths.split(",")):
        m = apply_plan(copy.deepcopy(dense), plan_from_ratios(dense, scores, heads=0, ffn=0, hidden=1 - keep / width))
        models[f"hidden {m.config.hidden_size}"] = m
    make = latency_inputs(tokenizer, dense.config.vocab_size, torch.device("cpu"))
    samples = interleaved_latency({name: model_timer(m, make, seq_len=SEQ, min_seconds=1.0, threads=args.threads)
                                   for name, m in models.items()}, args.rounds)
    x = make(32, SEQ)
    rows = []
    for name, m in models.items():
        ops = op_times(m, x)
        lat = latency_fields(samples[name])["latency_ms"]
        rows.append({"model": name, "macs_per_token": macs_per_token(m, SEQ), "latency_ms": lat,
                     "ops_ms_batch_32": {label: ops.get(key, 0.0) for key, label in OPS.items()},
                     "other_ms": sum(v for k, v in ops.items() if k not in OPS)})
    gemms = []
    for h in [width, *(int(w) for w in args.widths.split(","))]:
        inter = dense.config.intermediate_size
        shapes = {"q/k/v": (h, width), "o": (width, h), "up": (h, inter), "down": (inter, h)}
        gemms.append({"hidden": h, **{f"{k} b{b}": gemm_gflops(b * SEQ, *s) for k, s in shapes.items()
                                      for b in (1, 32)}})
    write(rows, gemms, args)


def write(rows: list[dict], gemms: list[dict], args: argparse.Namespace) -> None:
    d = rows[0]
    lines = ["# Hidden width: MACs against measured time (MiniLM, no recovery)", "",
             f"Latency: median of {args.rounds} interleaved rounds, sequence {SEQ}, {torch.get_num_threads()} "
             "threads. Heads keep their size (32) and the FFN its width (1536): only the residual width shrinks. "
             "`python bench/hidden_width.py`.", "",
             "| model | MACs ratio | speedup b1 | speedup b32 | latency b1 / b32 ms | "
             + " | ".join(f"{v} ms" for v in OPS.values()) + " | other ms |",
             "| --- | --: | --: | --: | --: | " + " | ".join("--:" for _ in OPS) + " | --: |"]
    for r in rows:
        lat, lat0 = r["latency_ms"], d["latency_ms"]
        lines.append(f"| {r['model']} | {d['macs_per_token'] / r['macs_per_token']:.2f}× | "
                     f"{lat0['batch_1'] / lat['batch_1']:.2f}× | {lat0['batch_32'] / lat['batch_32']:.2f}× | "
                     f"{lat['batch_1']:.1f} / {lat['batch_32']:.0f} | "
                     + " | ".join(f"{r['ops_ms_batch_32'][v]:.0f}" for v in OPS.values()) + f" | {r['other_ms']:.0f} |")
    keys = [k for k in gemms[0] if k != "hidden"]
    lines += ["", "Per-operator columns: self CPU time of one batch-32 forward pass (torch.profiler).", "",
              "GEMM speed of one layer's Linear shapes (GFLOP/s; tokens × in → out):", "",
              "| hidden | " + " | ".join(keys) + " |", "| --: | " + " | ".join("--:" for _ in keys) + " |"]
    for g in gemms:
        lines.append(f"| {g['hidden']} | " + " | ".join(f"{g[k]:.0f}" for k in keys) + " |")
    write_results("hidden_width", lines, {"args": vars(args), "rows": rows, "gemm_gflops": gemms})


if __name__ == "__main__":
    main()
