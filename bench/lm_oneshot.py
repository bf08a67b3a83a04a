"""Benchmark: one-shot pruning of SmolLM2-135M — magnitude, Wanda, SparseGPT at 50 % and 2:4 — plus
structured rows (heads + FFN neurons, with and without least-squares reconstruction).

Calibration windows come from the Wikipedia asset's calibration articles, evaluation windows from its
evaluation articles (disjoint). Every row runs in a fresh process (so peak memory is that row's own)
through the same Python API the CLI calls, against one dense perplexity measured once.
Writes bench/results/lm_oneshot.{md,json}.

    python bench/lm_oneshot.py [--calib 128] [--eval 32] [--seq-len 512] [--only wanda-50,...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _results import RESULTS, versions_line, write_results  # bench/ is on sys.path when a script runs

from prunekit.prune.calibration import CALIB_BATCH

ROOT = Path(__file__).resolve().parent
WORK = ROOT / "work" / "lm"
MODEL, DATA = "smollm2-135m", "wikipedia"

# name -> settings; "published" rows use the algorithms' published settings (uniform per-layer sparsity,
# every Linear of a block calibrated on the block's dense activations, no refit, 32 calibration windows
# as in the reference runs), the others prunekit's defaults.
ROWS: dict[str, dict] = {
    "magnitude-50": {"method": "magnitude", "sparsity": 0.5, "layer_ratios": "uniform"},
    "magnitude-2:4": {"method": "magnitude", "pattern": "2:4", "sparsity": 0.5, "layer_ratios": "uniform"},
    "wanda-50-published": {"method": "wanda", "sparsity": 0.5, "layer_ratios": "uniform", "true_sequential": False,
                           "calibration": "sequential", "calib_samples": 32},
    # prunekit's default for a mask-only wanda: statistics from the unpruned model, one block pass
    "wanda-50": {"method": "wanda", "sparsity": 0.5},
    # each block calibrated on the already-pruned blocks' outputs: two block passes
    "wanda-50-sequential": {"method": "wanda", "sparsity": 0.5, "calibration": "sequential"},
    "wanda-2:4": {"method": "wanda", "pattern": "2:4", "sparsity": 0.5},
    "wanda-2:4-sequential": {"method": "wanda", "pattern": "2:4", "sparsity": 0.5, "calibration": "sequential"},
    "sparsegpt-50-published": {"method": "sparsegpt", "sparsity": 0.5, "layer_ratios": "uniform",
                               "true_sequential": False, "refit": False, "calib_samples": 32},
    "sparsegpt-50": {"method": "sparsegpt", "sparsity": 0.5},
    # the CLI's default calibration (128 windows) rather than the bench's --calib
    "sparsegpt-50-calib128": {"method": "sparsegpt", "sparsity": 0.5, "calib_samples": 128},
    # the least-squares refit of the kept weights (on by default for sparsegpt), measured by turning it off/on
    "sparsegpt-50-no-refit": {"method": "sparsegpt", "sparsity": 0.5, "refit": False},
    "wanda-50-refit": {"method": "wanda", "sparsity": 0.5, "refit": True},
    # the two options left off by default, each measured against the default row
    "sparsegpt-50-owl": {"method": "sparsegpt", "sparsity": 0.5, "layer_ratios": "owl"},
    "sparsegpt-50-dense-targets": {"method": "sparsegpt", "sparsity": 0.5, "dense_targets": True},
    "sparsegpt-2:4-published": {"method": "sparsegpt", "pattern": "2:4", "sparsity": 0.5, "true_sequential": False,
                                "refit": False, "calib_samples": 32},
    "sparsegpt-2:4-calib128": {"method": "sparsegpt", "pattern": "2:4", "sparsity": 0.5, "calib_samples": 128},
    "sparsegpt-2:4": {"method": "sparsegpt", "pattern": "2:4", "sparsity": 0.5},
    "sparsegpt-2:4-no-refit": {"method": "sparsegpt", "pattern": "2:4", "sparsity": 0.5, "refit": False},
    "wanda-2:4-refit": {"method": "wanda", "pattern": "2:4", "sparsity": 0.5, "refit": True},
    "structured-plain": {"structured": {"heads": 0.34, "ffn": 0.25, "reconstruct": False}},
    "structured-ls": {"structured": {"heads": 0.34, "ffn": 0.25, "reconstruct": True}},
}


def run_row(name: str, args: argparse.Namespace, baseline: dict) -> dict:
    """One row in this process (called in a child process by :func:`main`)."""
    import torch

    from prunekit.pipeline_lm import StructuredLM, prune_lm
    from prunekit.prune.oneshot import OneShotSettings

    torch.set_num_threads(args.threads)
    spec = dict(ROWS[name])
    calib = spec.pop("calib_samples", args.calib)  # a row may fix its own calibration size
    structured = StructuredLM(**spec.pop("structured"), latency=True) if "structured" in spec else None
    settings = OneShotSettings(**spec) if structured is None else None
    out = WORK / name.replace(":", "_")
    report = prune_lm(MODEL, DATA, out, settings, calib_samples=calib, seq_len=args.seq_len,
                      eval_samples=args.eval, seed=args.seed, force=True, structured=structured, baseline=baseline)
    final = report["stages"][-1]
    row = {
        "row": name,
        "perplexity": report["perplexity"]["pruned"],
        "ratio": report["perplexity"]["ratio"],
        "sparsity": final["sparsity"],
        "params_total": final["params_total"],
        "prune_seconds": report["prune_seconds"],
        "peak_rss_bytes": report["peak_memory"]["peak_rss_bytes"],
        "peak_extra_bytes": report["peak_memory"]["peak_extra_bytes"],
        "model_fp32_bytes": report["peak_memory"]["model_fp32_bytes"],
        "disk_bytes": report["disk"]["weights_bytes"],
        "dense_disk_bytes": report["stages"][0]["size_bytes"],
        "latency_ms": final.get("latency_ms"),
        "dense_latency_ms": report["stages"][0].get("latency_ms"),
        "settings": ROWS[name],
        "oneshot_settings": report["settings"].get("oneshot"),  # every default, as run
        "calib_samples": calib,
        "threads": args.threads,
    }
    shutil.rmtree(out, ignore_errors=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calib", type=int, default=128, help="calibration windows")
    ap.add_argument("--eval", type=int, default=32, help="evaluation windows")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default=None, help="comma-separated row names")
    ap.add_argument("--append", action="store_true", help="keep earlier rows of results/lm_oneshot.json")
    ap.add_argument("--render", action="store_true", help="only rewrite results/lm_oneshot.md from the JSON")
    ap.add_argument("--row", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--baseline", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.row:
        print("ROW " + json.dumps(run_row(args.row, args, json.loads(args.baseline))), flush=True)
        return

    if args.render:
        saved = json.loads((RESULTS / "lm_oneshot.json").read_text())
        write(saved["rows"], saved["dense"], argparse.Namespace(**saved["args"]), saved.get("seconds"))
        return

    import torch

    from prunekit.pipeline_lm import evaluate_lm

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    dense = evaluate_lm(MODEL, DATA, seq_len=args.seq_len, eval_samples=args.eval)
    print(f"dense perplexity {dense['perplexity']:.3f} on {dense['tokens']} tokens ({dense['seconds']:.0f} s)",
          flush=True)
    baseline = {k: dense[k] for k in ("perplexity", "loss", "tokens", "windows", "seconds")}
    names = args.only.split(",") if args.only else list(ROWS)
    path = RESULTS / "lm_oneshot.json"
    rows = json.loads(path.read_text())["rows"] if args.append and path.exists() else []
    rows = [r for r in rows if r["row"] not in names and r["row"] in ROWS]  # rows no longer defined go
    for name in names:
        cmd = [sys.executable, __file__, "--row", name, "--baseline", json.dumps(baseline), "--calib", str(args.calib),
               "--eval", str(args.eval), "--seq-len", str(args.seq_len), "--seed", str(args.seed),
               "--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("ROW ")]
        if proc.returncode or not lines:
            print(f"{name}: failed\n{proc.stderr[-2000:]}", flush=True)
            continue
        row = json.loads(lines[-1][4:])
        rows.append(row)
        print(f"{name:26s} ppl {row['perplexity']:8.2f} ({row['ratio']:.2f}× dense)  {row['prune_seconds']:6.1f} s  "
              f"peak {row['peak_rss_bytes'] / 1e9:.2f} GB  disk {row['disk_bytes'] / 1e6:.0f} MB", flush=True)
    order = {n: i for i, n in enumerate(ROWS)}
    rows.sort(key=lambda r: order.get(r["row"], 99))
    write(rows, dense, args, time.perf_counter() - start)


def refits_today(name: str) -> bool:
    """Whether the row, run now, would refit its kept weights (prunekit's own default rule decides)."""
    from prunekit.prune.oneshot import OneShotSettings

    spec = {k: v for k, v in ROWS.get(name, {}).items() if k != "calib_samples"}
    return "structured" not in spec and bool(spec) and OneShotSettings(**spec).refits


def working(row: dict) -> int:
    """The fp32 model plus pruning's own peak memory: what a model of this size needs to prune."""
    return row["model_fp32_bytes"] + row["peak_extra_bytes"]


def write(rows: list[dict], dense: dict, args: argparse.Namespace, seconds: float | None) -> None:
    fp32 = rows[0]["model_fp32_bytes"] if rows else None
    lines = [
        "# One-shot pruning of SmolLM2-135M (bench/lm_oneshot.py)",
        "",
        f"Calibration: windows of {args.seq_len} tokens (as many as each row says) from the Wikipedia asset's "
        "calibration articles; "
        f"evaluation: {args.eval} × {args.seq_len} tokens, evenly spaced over its evaluation articles (disjoint). "
        f"Seed {args.seed}. Dense perplexity **{dense['perplexity']:.2f}**.",
        "",
        "| Row | Calibration windows | Perplexity | × dense | Sparsity | Params | Prune s (threads) |"
        " Model + pruning memory GB (× fp32 model) | Process peak RSS GB | Disk MB | Latency b1 / b8 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| dense | – | {dense['perplexity']:.2f} | 1.00 | 0 % | – | – | – | – | "
        f"{rows[0]['dense_disk_bytes'] / 1e6:.0f} | "
        + (" / ".join(f"{v:.0f}" for v in rows[-1]["dense_latency_ms"].values())
           if rows and rows[-1].get("dense_latency_ms") else "–") + " |",
    ]
    for r in rows:
        lat = " / ".join(f"{v:.0f}" for v in r["latency_ms"].values()) if r.get("latency_ms") else "–"
        # rows measured before the least-squares refit existed ran without it, whatever their settings say
        old = "†" if refits_today(r["row"]) and "refit" not in (r.get("oneshot_settings") or {}) else ""
        # rows that recorded no settings predate CALIB_BATCH, when every calibration ran 8 windows per pass
        batch = (r.get("oneshot_settings") or {}).get("batch_size", 8)
        old += "‡" if ROWS.get(r["row"], {}).get("method") != "magnitude" and batch != CALIB_BATCH else ""
        lines.append(
            f"| {r['row']}{old} | {r['calib_samples']} | {r['perplexity']:.2f} | {r['ratio']:.2f} | "
            f"{100 * r['sparsity']:.0f} % | "
            f"{r['params_total'] / 1e6:.1f} M | {r['prune_seconds']:.0f} ({r['threads']}) | {working(r) / 1e9:.2f} "
            f"({working(r) / fp32:.2f}×) | {r['peak_rss_bytes'] / 1e9:.2f} | {r['disk_bytes'] / 1e6:.0f} | {lat} |"
        )
    lines += ["", "Model + pruning memory: the fp32 model plus the most memory pruning added on top of what the "
              "process held when it started (activations, statistics, Hessians). The process peak also holds "
              "about 0.4 GB of Python, torch and transformers code and the tokenised corpus.",
              "", "† measured before prunekit had the least-squares refit of kept weights (so without it); "
              "re-run the row to measure it with today's defaults.",
              "", f"‡ calibrated with another number of windows per forward pass than today's {CALIB_BATCH} "
              "(bench/calib_batch.py): the same statistics, but more transient memory and a little more time.",
              "", (f"Last run {seconds / 60:.1f} min. " if seconds else "") + versions_line()]
    write_results("lm_oneshot", lines, {"args": vars(args), "dense": dense, "rows": rows, "seconds": seconds},
                  versions=False)


if __name__ == "__main__":
    main()
