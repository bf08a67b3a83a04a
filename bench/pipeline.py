"""Benchmark: pruning chained with distillation, low-rank and quantisation, MiniLM on movie reviews.

Rows (every chain is a prunekit recipe run from the same fine-tuned baseline):
dense fp32; int8 only; structured 50 % (heads + FFN) + recovery; structured 50 % + distillation;
+ int8; low-rank 50 % (+ the same fine-tuning); + ONNX Runtime static int8 (of the distilled model).
Recovery and distillation get the same budget (one epoch, AdamW, same lr) and run with two seeds each,
because the difference between them is of the order of seed noise; the table shows both seeds.
Latency is measured at the end for every row's saved artefact in interleaved rounds (batch 1 and 32,
sequence 128, threads = cores), so speedups are ratios from the same run. Size is the artefact's size
on disk (safetensors folder or .onnx file). Writes bench/results/pipeline.{md,json}.

    python bench/pipeline.py [--epochs 1] [--lr 2e-4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from pathlib import Path

import torch
from _results import write_results  # bench/ is on sys.path when a script runs

from prunekit.pipeline import DEFAULT_DATA, default_baseline
from prunekit.recipe import LatencyOptions, interleaved_latency, run_recipe

ROOT = Path(__file__).resolve().parent
WORK = ROOT / "work" / "pipeline"
SEQ = 128


MAX_TRAIN: int | None = None  # --max-train-samples: smoke runs only


def chain(model_dir: Path, name: str, stages: list, seed: int, keep: tuple[str, ...]) -> dict:
    """Run one recipe; returns the report with the in-memory models of the ``keep`` stages (no latency yet)."""
    data = {"data": DEFAULT_DATA.data, "max_length": DEFAULT_DATA.max_length, "max_train_samples": MAX_TRAIN}
    recipe = {"model": str(model_dir), "data": data, "seed": seed, "latency": {"rounds": 0}, "stages": stages}
    report = run_recipe(recipe, WORK / f"{name}-seed{seed}", force=True, keep_runners=True)
    report["_runners"] = {k: v for k, v in report["_runners"].items() if k in keep}
    return report


def _stage(report: dict, name: str) -> dict:
    return next(s for s in report["stages"] if s["name"] == name)


def _seconds(report: dict, upto: str) -> float:
    total = 0.0
    for s in report["stages"][1:]:
        total += s["seconds"]
        if s["name"] == upto:
            return total
    raise KeyError(upto)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved latency rounds")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--max-train-samples", type=int, default=None, help="quick smoke runs only")
    args = ap.parse_args()
    global MAX_TRAIN
    MAX_TRAIN = args.max_train_samples
    start = time.perf_counter()
    model_dir = default_baseline(0)
    prune = {"prune": {"name": "pruned", "heads": 0.5, "ffn": 0.5, "importance": "taylor"}}
    budget = {"epochs": args.epochs, "lr": args.lr}
    first = args.seeds[0]

    runs = {"int8": chain(model_dir, "int8", [{"int8": {"name": "int8"}}], first, ("baseline", "int8"))}
    for seed in args.seeds:
        keep = ("recovered", "distilled", "int8", "ort-int8") if seed == first else ()
        runs[f"recover{seed}"] = chain(model_dir, "recover", [prune, {"finetune": {"name": "recovered", **budget}}],
                                       seed, keep)
        stages = [prune, {"distill": {"name": "distilled", **budget}}, {"int8": {"name": "int8"}}]
        if seed == first:
            stages.append({"onnx": {"name": "ort-int8", "static_int8": True, "calib_batches": 16}})
        runs[f"distill{seed}"] = chain(model_dir, "distill", stages, seed, keep)
    runs["lowrank"] = chain(model_dir, "lowrank", [{"lowrank": {"name": "lowrank", "ratio": 0.5}},
                                                   {"finetune": {"name": "tuned", **budget}}], first, ("tuned",))

    def seeds_of(kind: str, stage: str) -> list[float]:
        return [_stage(runs[f"{kind}{s}"], stage)["metrics"]["accuracy"] for s in args.seeds]

    base = runs["int8"]
    d0 = runs[f"distill{first}"]
    rows = [  # label, report, stage, accuracies over seeds (None: one seed)
        ("dense fp32", base, "baseline", None),
        ("int8 only (PyTorch dynamic)", base, "int8", None),
        ("structured 50 % + recovery", runs[f"recover{first}"], "recovered", seeds_of("recover", "recovered")),
        ("structured 50 % + distillation", d0, "distilled", seeds_of("distill", "distilled")),
        ("structured 50 % + distillation + int8", d0, "int8", seeds_of("distill", "int8")),
        ("low-rank 50 % + fine-tuning", runs["lowrank"], "tuned", None),
        ("structured 50 % + distillation + ONNX Runtime static int8", d0, "ort-int8", None),
    ]
    runners = {label: rep["_runners"][stage] for label, rep, stage, _ in rows}
    # latency: every row, interleaved rounds; wait (a while) for a quieter shared machine first
    for _ in range(30):
        if os.getloadavg()[0] < 1.5:
            break
        time.sleep(10)
    load = round(os.getloadavg()[0], 2)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    lat = interleaved_latency(runners, tokenizer, runners["dense fp32"].config.vocab_size,
                              LatencyOptions(seq_len=SEQ, batch_sizes=[1, 32], rounds=args.rounds, min_seconds=1.0))
    table = []
    for label, rep, stage, accs in rows:
        rec = _stage(rep, stage)
        table.append({"row": label, "accuracy": rec["metrics"]["accuracy"], "f1_macro": rec["metrics"]["f1_macro"],
                      "accuracy_seeds": accs, "disk_bytes": rec["disk_bytes"], "latency_ms": lat[label],
                      "seconds": 0.0 if stage == "baseline" else _seconds(rep, stage)})
    meta = {**vars(args), "load_average_at_latency": load, "threads": torch.get_num_threads(),
            "total_seconds": round(time.perf_counter() - start), "test_examples": base["data"]["test"]}
    write(table, meta)
    shutil.rmtree(WORK, ignore_errors=True)


def write(table: list[dict], meta: dict) -> None:
    d = table[0]
    seeds = "/".join(str(s) for s in meta["seeds"])
    lines = [
        "# Pruning + distillation + low-rank + quantisation: MiniLM (all-MiniLM-L6-v2) on movie reviews",
        "",
        f"Same fine-tuned baseline for every row; test split {meta['test_examples']} snippets, max length 64. "
        f"Structured 50 %: half the heads and half the FFN neurons of every layer (taylor), removed. Recovery and "
        f"distillation: {meta['epochs']:g} epoch, AdamW lr {meta['lr']:g}, batch 32; accuracy is seed "
        f"{meta['seeds'][0]}, with seeds {seeds} in brackets where the row was run with several. Size: the saved "
        f"artefact on disk. Latency: median of {meta['rounds']} interleaved rounds, sequence {SEQ}, "
        f"{meta['threads']} threads, ratios measured in this run (1-min load average when latency started: "
        f"{meta['load_average_at_latency']}). Total bench time {meta['total_seconds']} s. `python bench/pipeline.py`.",
        "",
        "| row | accuracy % | Δ points | size MB | smaller | latency b1 / b32 ms | faster b1 | faster b32 | time s |",
        "| --- | --: | --: | --: | --: | --: | --: | --: | --: |",
    ]
    for r in table:
        lat, lat0 = r["latency_ms"], d["latency_ms"]
        acc = f"{100 * r['accuracy']:.2f}"
        if r["accuracy_seeds"]:
            acc += " (" + " / ".join(f"{100 * a:.2f}" for a in r["accuracy_seeds"]) + ")"
        lines.append(
            f"| {r['row']} | {acc} | {100 * (r['accuracy'] - d['accuracy']):+.2f} | {r['disk_bytes'] / 1e6:.1f} | "
            f"{d['disk_bytes'] / r['disk_bytes']:.2f}× | {lat['batch_1']:.1f} / {lat['batch_32']:.0f} | "
            f"{lat0['batch_1'] / lat['batch_1']:.2f}× | {lat0['batch_32'] / lat['batch_32']:.2f}× | "
            f"{r['seconds']:.0f} |"
        )
    rec, dis = table[2]["accuracy_seeds"], table[3]["accuracy_seeds"]
    if rec and dis:
        lines += ["", f"Distillation − recovery, mean over seeds {seeds}: "
                  f"{100 * (statistics.mean(dis) - statistics.mean(rec)):+.2f} points "
                  f"(per seed: {', '.join(f'{100 * (b - a):+.2f}' for a, b in zip(rec, dis, strict=True))})."]
    write_results("pipeline", lines, {"meta": meta, "rows": table})


if __name__ == "__main__":
    main()
