"""Benchmark: which layer criterion picks the 3 of MiniLM's 6 layers to remove — measured without recovery.

Every criterion of :func:`prunekit.importance.groups.layer_scores` ranks the layers of the fine-tuned
MiniLM on the same calibration batches the pipeline uses (16 × 32 training snippets); the 3 lowest go.
The accuracy right after removal (no recovery) is compared with the peers' "keep the first 3 layers" and
with every one of the 20 possible choices (the oracle, which looks at the test labels, so no method
can know it). Cheap: no training, so this is how the default of ``--layer-importance`` was chosen.
Writes bench/results/layer_criteria.{md,json}.

    python bench/layer_criteria.py [--remove 3]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import statistics
import time

from _results import write_results  # bench/ is on sys.path when a script runs

from prunekit.config import DataOptions
from prunekit.importance.groups import DEFAULT_LAYER_SCORE, LAYER_SCORES, group_scores, layer_scores
from prunekit.pipeline import default_baseline, open_workbench
from prunekit.prune import prune_layers
from prunekit.steps import calibration_batches
from prunekit.tasks.classification import evaluate as evaluate_split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--remove", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--calib-batches", type=int, default=16)
    ap.add_argument("--max-eval-samples", type=int, default=None, help="quick smoke runs only")
    args = ap.parse_args()
    data = DataOptions("movie-reviews", max_length=64, max_eval_samples=args.max_eval_samples)
    wb = open_workbench(str(default_baseline(args.seed)), data, args.seed)
    model = wb.model.eval()
    n = len(model.bert.encoder.layer)
    batches = calibration_batches(wb, args.calib_batches, 32, args.seed + 1)  # as `prunekit prune` at step 1

    def accuracy(removed: tuple[int, ...], split: str) -> float:
        kept = [i for i in range(n) if i not in removed]
        m = prune_layers(copy.deepcopy(model), kept)
        return 100 * evaluate_split(m, getattr(wb, split), wb.tokenizer, desc=False)[0]["accuracy"]

    dense = {s: 100 * evaluate_split(model, getattr(wb, s), wb.tokenizer, desc=False)[0]["accuracy"]
             for s in ("validation", "test")}
    oracle = {rem: {s: accuracy(rem, s) for s in ("validation", "test")}
              for rem in itertools.combinations(range(n), args.remove)}
    by_test = sorted(oracle, key=lambda r: -oracle[r]["test"])
    rows = []
    for how in LAYER_SCORES:
        start = time.perf_counter()
        if how == "groups":  # the sum of the layer's head and FFN scores (taylor, as the benchmark rows use)
            scores = group_scores(model, "taylor", batches=batches, layers="groups").layers
        else:
            scores = layer_scores(model, how, batches=batches, remove=args.remove)
        seconds = time.perf_counter() - start
        removed = tuple(sorted(scores.argsort()[: args.remove].tolist()))
        rows.append({"method": f"prunekit {how}" + (" (default)" if how == DEFAULT_LAYER_SCORE else ""),
                     "removed": list(removed), "scores": scores.tolist(), "seconds": seconds, **oracle[removed],
                     "rank": by_test.index(removed) + 1})
    first = tuple(range(n - args.remove, n))
    rows.append({"method": f"peer recipe: keep the first {n - args.remove}", "removed": list(first),
                 **oracle[first], "rank": by_test.index(first) + 1})
    write(rows, dense, oracle, by_test, args, n)


def write(rows: list[dict], dense: dict, oracle: dict, by_test: list, args: argparse.Namespace, n: int) -> None:
    tests = [v["test"] for v in oracle.values()]
    lines = [
        f"# Which {args.remove} of MiniLM's {n} layers to remove: accuracy right after removal, no recovery",
        "",
        f"Fine-tuned all-MiniLM-L6-v2 on movie reviews (dense: test {dense['test']:.2f} %, validation "
        f"{dense['validation']:.2f} %). Criteria scored on {args.calib_batches} × 32 training snippets "
        f"(`groups` sums taylor head and FFN scores). Rank: place of the choice among all {len(oracle)} possible "
        f"ones by test accuracy. `python bench/layer_criteria.py`.",
        "",
        "| criterion | layers removed | test acc. % | validation acc. % | rank of 20 | scoring s |",
        "| --- | --- | --: | --: | --: | --: |",
    ]
    for r in rows:
        secs = f"{r['seconds']:.1f}" if "seconds" in r else "–"
        lines.append(f"| {r['method']} | {r['removed']} | {r['test']:.2f} | {r['validation']:.2f} | {r['rank']} | "
                     f"{secs} |")
    best = by_test[0]
    lines += ["", f"All {len(oracle)} choices: test accuracy best {max(tests):.2f} (removes {list(best)}), median "
              f"{statistics.median(tests):.2f}, worst {min(tests):.2f}."]
    write_results("layer_criteria", lines, {"args": vars(args), "dense": dense, "rows": rows,
                                            "all_choices": {str(list(k)): v for k, v in oracle.items()}})


if __name__ == "__main__":
    main()
