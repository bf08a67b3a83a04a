"""Benchmark: how many calibration windows per forward pass (prunekit.prune.calibration.CALIB_BATCH).

Times one SmolLM2-135M block on calibration windows of 512 tokens at several batch sizes, in
interleaved repeats (the machines are shared: the best repeat is quoted, every repeat kept).
Writes bench/results/calib_batch.{md,json}.

    python bench/calib_batch.py [--sizes 1,2,4,8,16] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch
from _results import write_results  # bench/ is on sys.path when a script runs

from prunekit.arch import transformer_layers
from prunekit.io.hf import load_causal_lm
from prunekit.prune.calibration import CALIB_BATCH, capture_block_inputs
from prunekit.tasks.lm import calibration_windows, load_lm_text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1,2,4,8,16")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--windows", type=int, default=16)
    ap.add_argument("--block", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lm, tokenizer = load_causal_lm("smollm2-135m")
    ids = calibration_windows(load_lm_text(tokenizer, "wikipedia"), args.windows, 512, 0)
    block = transformer_layers(lm)[1][args.block]
    cpu = torch.device("cpu")
    sizes = [int(x) for x in args.sizes.split(",")]
    runs: dict[int, list[float]] = {b: [] for b in sizes}
    with torch.no_grad():
        for _ in range(args.repeats):
            for bs in sizes:  # interleaved, so a noisy minute hits every size alike
                inputs = capture_block_inputs(lm, ids, bs, cpu, cpu)
                block(inputs.hidden[0], *inputs.args[0], **inputs.kwargs[0])  # warm-up
                start = time.perf_counter()
                for hidden, a, kw in zip(inputs.hidden, inputs.args, inputs.kwargs, strict=True):
                    block(hidden, *a, **kw)
                runs[bs].append(1000 * (time.perf_counter() - start) / args.windows)
    best = {b: min(v) for b, v in runs.items()}
    lines = ["# Calibration windows per forward pass (bench/calib_batch.py)", "",
             f"SmolLM2-135M block {args.block}, {args.windows} windows × 512 tokens, {args.threads} threads; "
             f"best of {args.repeats} interleaved repeats. prunekit's default: {CALIB_BATCH}.", "",
             "| windows per pass | ms per window (best) | all repeats | × the fastest |", "|---:|---:|---|---:|"]
    fastest = min(best.values())
    for b in sizes:
        lines.append(f"| {b}{' (default)' if b == CALIB_BATCH else ''} | {best[b]:.1f} | "
                     f"{', '.join(f'{x:.1f}' for x in runs[b])} | {best[b] / fastest:.2f} |")
    write_results("calib_batch", lines, {"args": vars(args), "ms_per_window": runs, "default": CALIB_BATCH})


if __name__ == "__main__":
    main()
