"""Benchmark: structured pruning across the decoder families of the architecture table.

Per family a random 6-layer, hidden-512 causal LM (8 query heads sharing 4 kv heads where the family
has GQA), 50 % of the heads and 50 % of the FFN neurons removed (L2 ranking, whole kv groups kept
equal); MACs per token before/after and the latency ratio at batch 1 and 32, timed in interleaved
rounds (:func:`prunekit.report.measure.interleaved_latency`). Writes bench/results/families.{md,json}.

    python bench/families.py [--families llama,gemma2] [--seq 128] [--rounds 3] [--layers 6] [--hidden 512]
"""

from __future__ import annotations

import argparse
import copy
import statistics

import torch
from _results import write_results  # bench/ is on sys.path when a script runs
from transformers import AutoConfig, AutoModelForCausalLM

from prunekit.arch.families import FAMILIES
from prunekit.importance.groups import group_scores
from prunekit.prune import apply_plan, plan_from_ratios
from prunekit.report.measure import bert_like_inputs, interleaved_latency, macs_per_token, model_timer

DECODERS = [t for fam in FAMILIES if fam.final_norm for t in fam.model_types]  # pre-LN decoders of the table
VOCAB = 1024


def build(model_type: str, layers: int, hidden: int) -> torch.nn.Module:
    """A random causal LM of ``model_type`` with the benchmark's shapes (head size 64)."""
    heads = hidden // 64
    size = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=4 * hidden)
    if model_type == "gpt2":
        size = dict(n_embd=hidden, n_layer=layers, n_head=heads, n_inner=4 * hidden)
    config = AutoConfig.for_model(model_type, vocab_size=VOCAB, pad_token_id=0, bos_token_id=1, eos_token_id=2, **size)
    if hasattr(config, "num_key_value_heads"):
        config.num_key_value_heads = heads // 2
    if getattr(config, "head_dim", None) is not None:
        config.head_dim = 64
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(DECODERS))
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=512)
    args = parser.parse_args()
    rows, payload = [], {"settings": vars(args), "families": {}}
    make_inputs = bert_like_inputs(VOCAB, token_type_ids=False)
    for model_type in args.families.split(","):
        dense = build(model_type, args.layers, args.hidden)
        plan = plan_from_ratios(dense, group_scores(dense, "l2", layers="groups"), heads=0.5, ffn=0.5)
        pruned = apply_plan(copy.deepcopy(dense), plan)
        macs = macs_per_token(dense, args.seq) / macs_per_token(pruned, args.seq)
        timers = {name: model_timer(m, make_inputs, seq_len=args.seq) for name, m in (("dense", dense),
                                                                                      ("pruned", pruned))}
        rounds = interleaved_latency(timers, rounds=args.rounds)
        speed = {b: statistics.median(d / p for d, p in zip(rounds["dense"][b], rounds["pruned"][b], strict=True))
                 for b in rounds["dense"]}
        payload["families"][model_type] = {"macs_ratio": macs, "speedup": speed, "rounds": rounds}
        cells = " | ".join(f"{speed.get(b, 0):.2f}×" for b in ("batch_1", "batch_32"))
        rows.append(f"| {model_type} | {macs:.2f}× | {cells} |")
    lines = ["# Structured pruning across decoder families", "",
             f"{args.layers} layers, hidden {args.hidden}, random weights; 50 % heads + 50 % FFN; "
             f"sequence {args.seq}, {args.rounds} interleaved rounds (speedup: median of per-round ratios).", "",
             "| family | MACs ratio | speedup batch 1 | speedup batch 32 |", "|---|---|---|---|", *rows]
    write_results("families", lines, payload)


if __name__ == "__main__":
    main()
