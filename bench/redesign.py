"""Benchmark check: do the seeded headline rows reproduce across a refactor?

Runs three rows exactly as their benchmarks run them and records the metrics under a label, so the
same script on the commit before a redesign (``--label before``) and after it (``--label after``)
puts both sets of numbers side by side in bench/results/redesign.{md,json}:

- the demo's final row (``prunekit demo``: the cached fine-tuned MiniLM, gradual 50 % magnitude,
  one epoch of recovery) — test accuracy;
- bench/structured.py's prunekit 50 % heads + 50 % FFN row (taylor, distillation, lr 2e-4) — test
  accuracy and the accuracy before recovery;
- bench/lm_oneshot.py's wanda-50 row (SmolLM2-135M, 64 calibration windows of 512 tokens) — perplexity.

Latency is not part of the check (it is a property of the machine, not of the code).

    python bench/redesign.py --label before   # on the old commit
    python bench/redesign.py --label after    # on the new one
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from _results import RESULTS, write_results  # bench/ is on sys.path when a script runs

from prunekit.config import DataOptions, PruneSettings
from prunekit.pipeline import DEFAULT_DATA, default_baseline, prune

ROOT = Path(__file__).resolve().parent
WORK = ROOT / "work" / "redesign"
ROWS = ("demo final", "structured heads+ffn 50 %", "lm wanda-50")


def demo_row(seed: int) -> dict:
    out = WORK / "demo"
    shutil.rmtree(out, ignore_errors=True)
    report = prune(str(default_baseline(seed)), DEFAULT_DATA, out, PruneSettings(sparsity=0.5, latency=False),
                   seed=seed, force=True, command="prunekit demo")
    final = report["stages"][-1]
    return {"accuracy": final["metrics"]["accuracy"], "sparsity": final["sparsity"]}


def structured_row(seed: int) -> dict:
    out = WORK / "structured"
    shutil.rmtree(out, ignore_errors=True)
    data = DataOptions("movie-reviews", max_length=64)
    settings = PruneSettings(latency=False, heads=0.5, ffn=0.5, finetune_epochs=1.0, lr=2e-4, importance="taylor",
                             distill=True)
    report = prune(str(default_baseline(seed)), data, out, settings, seed=seed, force=True)
    final = report["stages"][-1]
    pruned = next(st for st in report["stages"] if st["name"] == "pruned")
    return {"accuracy": final["metrics"]["accuracy"], "pruned_accuracy": pruned["metrics"]["accuracy"],
            "params_total": final["params_total"]}


def lm_row(seed: int) -> dict:
    from prunekit.pipeline_lm import prune_lm
    from prunekit.prune.oneshot import OneShotSettings

    out = WORK / "lm-wanda-50"
    shutil.rmtree(out, ignore_errors=True)
    report = prune_lm("smollm2-135m", "wikipedia", out, OneShotSettings(method="wanda", sparsity=0.5),
                      calib_samples=64, seq_len=512, eval_samples=32, seed=seed, force=True)
    return {"perplexity": report["perplexity"]["pruned"], "dense_perplexity": report["perplexity"]["dense"],
            "sparsity": report["stages"][-1]["sparsity"]}


RUNNERS = {"demo final": demo_row, "structured heads+ffn 50 %": structured_row, "lm wanda-50": lm_row}


def _cell(row: dict | None, key: str, scale: float = 100.0) -> str:
    if not row or key not in row:
        return "–"
    return f"{scale * row[key]:.2f}"


def render(payload: dict) -> list[str]:
    labels = list(payload["runs"])
    lines = ["# Seeded rows before and after a redesign", "",
             "The same seeded rows run by `python bench/redesign.py --label LABEL` on each commit; equal numbers "
             "mean the refactor kept behaviour. Accuracy in %, test split.", "",
             "| row | metric | " + " | ".join(f"{lab} ({payload['runs'][lab]['commit']})" for lab in labels) + " |",
             "| --- | --- | " + " | ".join("--:" for _ in labels) + " |"]
    metrics = {"demo final": [("accuracy", 100.0)],
               "structured heads+ffn 50 %": [("accuracy", 100.0), ("pruned_accuracy", 100.0)],
               "lm wanda-50": [("perplexity", 1.0), ("dense_perplexity", 1.0)]}
    for row in ROWS:
        for key, scale in metrics[row]:
            cells = [_cell(payload["runs"][lab]["rows"].get(row), key, scale) for lab in labels]
            lines.append(f"| {row} | {key} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--label", required=True, help="e.g. before / after")
    ap.add_argument("--commit", default="", help="the commit the rows ran on (shown in the table)")
    ap.add_argument("--only", default=None, help="comma-separated row names")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (the same for both labels: float "
                    "sums depend on how work is split)")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    path = RESULTS / "redesign.json"
    payload = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    run = payload["runs"].setdefault(args.label, {"commit": args.commit, "rows": {}, "seconds": {}})
    run["commit"] = args.commit or run["commit"]
    run["threads"] = args.threads
    for name in args.only.split(",") if args.only else ROWS:
        start = time.perf_counter()
        run["rows"][name] = RUNNERS[name](args.seed)
        run["seconds"][name] = time.perf_counter() - start
        write_results("redesign", render(payload), payload)  # after every row: a kill keeps what ran


if __name__ == "__main__":
    main()
