"""Benchmark: how much to prune where — uniform vs global ranking vs prunekit's searched plan vs L0 gates.

MiniLM on movie reviews, 50 % of the encoder's attention + FFN parameters removed structurally (--remove sets
another budget, a group of its own); every
row starts from the same fine-tuned baseline, and every row of a group gets the same recovery budget
(--epochs, default one; --distill; AdamW, the same learning rate; the L0 row learns its gates during 3/4
of it and recovers the cut model in the last 1/4). A table may hold several groups (--append).
SmolLM2-135M at 50 % unstructured Wanda: uniform vs OWL vs global ranking vs the searched per-block plan,
perplexity on the Wikipedia evaluation articles (the search only saw held-out calibration text).
Columns: test metric, evaluations the method used to choose its ratios, its wall time.
Writes bench/results/search.{md,json}.

    python bench/search.py [--epochs 1] [--lr 2e-4] [--only minilm|smollm|uniform,global,search,l0,dense] [--append]
    python bench/search.py --only uniform,global,search,l0 --append --epochs 0.25 --distill --seeds 0,1,2
    python bench/search.py --only search --append --plan bench/work/search/plan --seeds 0,1,2   # reuse a plan
    python bench/search.py --only uniform,global,dense --append --lr 3e-5 --seeds 0,1,2   # another recovery group
    python bench/search.py --only uniform,global,search --append --remove 0.7 --recover-epochs 0 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
from _results import RESULTS, write_results  # bench/ is on sys.path when a script runs

from prunekit.config import DataOptions, PruneSettings
from prunekit.pipeline import DEFAULT_DATA, default_baseline, prune
from prunekit.report.render import package_versions
from prunekit.search.api import SearchData, search

ROOT = Path(__file__).resolve().parent
WORK = ROOT / "work" / "search"
LM_ARGS = ("lm_calib", "lm_eval", "lm_ratios", "lm_val", "lm_space")
#: --only names of single MiniLM rows
MINILM_ROWS = ("uniform", "global", "search", "l0", "dense")
DEFAULT_LR = 2e-4  # prunekit's default for fine-tuning a pruned transformer
DEFAULT_REMOVE = 0.5  # the budget: half of the encoder's attention + FFN parameters removed
SEARCH_ROW = "prunekit search (SA, params=0.5)"
#: a search whose finalists were measured as cut (--recover-epochs 0), a row of its own beside the default's
SEARCH_CUT_ROW = "prunekit search (SA, params=0.5; finalists measured as cut)"
CUT_NOTE = "; finalists measured as cut"
DENSE_ROW = "unpruned (nothing removed), the same recovery"


def row_names(remove: float) -> dict[str, str]:
    """The MiniLM rows' names at a removal budget (at 0.5 the names the table has always used)."""
    pct, keep = f"{100 * remove:g} %", f"params={1 - remove:g}"  # a --budget names the kept fraction
    return {"uniform": f"uniform ({pct} heads + {pct} FFN per layer)",
            "global": "global ranking (heads, FFN across layers)",
            "search": f"prunekit search (SA, {keep})", "search_cut": f"prunekit search (SA, {keep}{CUT_NOTE})",
            "l0": f"L0 gates (learned, {keep})", "dense": DENSE_ROW, "budget": keep}


def minilm_rows(args: argparse.Namespace, which: tuple[str, ...] = MINILM_ROWS) -> list[dict]:
    """The MiniLM rows named in ``which`` (all by default)."""
    base = default_baseline(args.seed)
    data: DataOptions = DEFAULT_DATA
    common = {"finetune_epochs": args.epochs, "lr": args.lr, "batch_size": 32, "latency": False,
              "importance": "taylor", "distill": args.distill}
    planned = {k: v for k, v in common.items() if k != "importance"}  # a plan names its own criterion
    recovery = recovery_of(args.epochs, args.distill, args.lr)
    remove = args.remove
    names = row_names(remove)
    suffix = "" if remove == DEFAULT_REMOVE else f"-remove{remove:g}"  # work files of another budget
    rows = []
    partial = WORK / "minilm-rows.jsonl"
    done = {}
    if args.resume and partial.is_file():
        done = {(r["method"], r["seed"]): r for r in map(json.loads, partial.read_text().splitlines())
                if "seed" in r and r.get("recovery") == recovery and r.get("remove", DEFAULT_REMOVE) == remove}
    elif partial.exists():
        partial.unlink()

    def run(name: str, settings: PruneSettings, evaluations: int, search_seconds: float, extra: dict) -> dict:
        """One row: prune + recover once per recovery seed (``--seeds``); the row's value is their mean."""
        runs, report = [], {}
        for seed in args.seeds:
            if (name, seed) in done:  # a finished run of an interrupted job (seeded: a rerun gives the same)
                runs.append(done[(name, seed)])
                continue
            out = WORK / name.split(" ")[0]
            t0 = time.perf_counter()
            report = prune(str(base), data, out, settings, seed=seed, force=True)
            seconds = time.perf_counter() - t0
            b, f = report["stages"][0], report["stages"][-1]
            correct = test_correct(out, data, f["metrics"]["accuracy"])
            runs.append({"method": name, "seed": seed, "value": 100 * f["metrics"]["accuracy"],
                         "baseline": 100 * b["metrics"]["accuracy"],
                         "validation": 100 * f["validation_metrics"]["accuracy"], "params_total": f["params_total"],
                         "macs_ratio": b["macs_per_token"] / f["macs_per_token"], "prune_recover_seconds": seconds,
                         "shapes": report.get("shapes"), "recovery": recovery, "remove": remove,
                         "test_correct": correct})
            print(json.dumps({k: v for k, v in runs[-1].items() if k not in ("shapes", "test_correct")}), flush=True)
            with open(partial, "a") as fh:
                fh.write(json.dumps(runs[-1]) + "\n")
        last = runs[-1]
        values = [r["value"] for r in runs]
        rows.append({"model": "MiniLM", "method": name, "recovery": recovery, "remove": remove,
                     "metric": "accuracy %",
                     "value": statistics.fmean(values),
                     "baseline": last["baseline"],
                     "validation": statistics.fmean(r["validation"] for r in runs),
                     "params_total": last["params_total"], "macs_ratio": last["macs_ratio"],
                     "evaluations": evaluations, "search_seconds": search_seconds,
                     "prune_recover_seconds": statistics.fmean(r["prune_recover_seconds"] for r in runs),
                     "shapes": last["shapes"], "seeds": list(args.seeds), "values": values,
                     "value_sd": statistics.stdev(values) if len(values) > 1 else None,
                     "per_seed": [{k: r[k] for k in ("seed", "value", "validation", "prune_recover_seconds")}
                                  for r in runs],
                     "test_correct": [r.get("test_correct") for r in runs], **extra})
        return report

    def uniform() -> None:
        run(names["uniform"], PruneSettings(heads=remove, ffn=remove, scope="local", **common), 0, 0.0, {})
    def global_() -> None:
        # prune --scope global, every layer keeping its best head and neuron (plain global ranking removes all
        # 12 heads of layer 5 here, which a BERT layer cannot run without)
        global_plan = global_ranking_plan(base, data, WORK / f"global-plan{suffix}.yaml", args.seed, remove)
        run(names["global"], PruneSettings(plan=str(global_plan), **planned), 0, 0.0, {})
    def searched() -> None:
        if args.plan:  # the plan of an earlier search (its own wall time and evaluations)
            where = Path(args.plan)
            summary = json.loads((where / "search.json").read_text())
            search_seconds = summary["seconds"]
        else:
            # one folder per finalist recovery, so a plan reused with --plan is not overwritten by another search
            where = WORK / ("plan" + ("" if args.recover_epochs is None else f"-recover{args.recover_epochs:g}")
                            + ("" if args.lr == DEFAULT_LR else f"-lr{args.lr:g}") + suffix)
            t0 = time.perf_counter()
            # the finalists recover at the rows' learning rate: ranked as the bench's recovery will leave them
            summary = search(str(base), data, where, names["budget"], evals=args.evals, steps=args.steps,
                             opts=SearchData(importance="taylor", seed=args.seed, recover_epochs=args.recover_epochs,
                                             recover_lr=args.lr, finalist_metric=args.rank),
                             force=True)
            search_seconds = time.perf_counter() - t0
        plan = summary["plan"]
        used = plan["search"]["real_evaluations"] + plan["search"]["sensitivity_evaluations"]
        name = names["search"] if summary["search"].get("recover_epochs") else names["search_cut"]
        run(name, PruneSettings(plan=str(where / "plan.yaml"), **planned),
            used, search_seconds, {"plan": {k: plan[k] for k in ("heads", "ffn", "budget", "scores")},
                                   "recover_epochs": summary["search"].get("recover_epochs"),
                                   "finalist_ranking": plan["search"].get("finalist_ranking"),
                                   "finalists": [{k: c.get(k) for k in ("label", "real", "proxy", "ratios", "loss",
                                                                        "paired")}
                                                 for c in summary["search"]["candidates"]]})
    def l0() -> None:
        report = run(names["l0"], PruneSettings(learn_structure=True, budget=names["budget"], **common),
                     0, 0.0, {})
        rows[-1]["search_seconds"] = rows[-1]["prune_recover_seconds"]  # the gates are learned while training
        rows[-1]["note"] = ("gates on heads and FFN neurons (layer gates off, see prunekit/search/l0.py) trained "
                            "during 3/4 of the recovery budget; wall time includes that training")
        learned = report.get("learned_structure") or rows[-1].get("learned") or {}
        rows[-1]["learned"] = {k: learned.get(k) for k in ("kept_fraction", "heads", "ffn", "layers_kept",
                                                            "layer_gates", "note")}
        if learned.get("trajectory"):
            rows[-1]["trajectory"] = [{k: t.get(k) for k in ("step", "expected_keep", "target", "lambda")}
                                      for t in learned["trajectory"][::5]]

    def dense() -> None:
        # the ceiling: the same recovery applied to the unpruned model (a plan that removes nothing), so the
        # table shows how much any allocation could still gain
        run(names["dense"], PruneSettings(plan=str(zero_plan(base, data, WORK / "zero-plan.yaml", args.seed)),
                                     **planned), 0, 0.0, {})

    steps = {"uniform": uniform, "global": global_, "search": searched, "l0": l0, "dense": dense}
    for name in which:  # in the order asked for
        steps[name]()
    return rows


def test_correct(folder: Path, data: DataOptions, accuracy: float) -> str:
    """Which test examples the saved model gets right ('0'/'1' in the split's order): the paired test-split SE of
    a difference between rows needs them (the seeds' spread says nothing about which examples were drawn)."""
    from prunekit.pipeline import open_workbench

    wb = open_workbench(str(folder), data)
    _, logits = wb.evaluate("test")
    right = logits.argmax(-1) == np.asarray(wb.test.labels)
    if abs(float(right.mean()) - accuracy) > 1e-9:  # the reloaded folder must be the model the row reports
        raise RuntimeError(f"{folder}: reloaded test accuracy {right.mean():.4f} differs from the report's {accuracy}")
    return "".join("1" if x else "0" for x in right)


def global_ranking_plan(base: Path, data: DataOptions, path: Path, seed: int, remove: float = DEFAULT_REMOVE) -> Path:
    """``prunekit prune --scope global`` (heads and FFN at ``remove``) as a plan: one ranking of all heads (and one of
    all FFN neurons) by the taylor scores and calibration batches prune uses (step 1: seed + 1), every layer
    keeping its best head and neuron (plan_from_ratios); written out so the row is applied like the others."""
    from prunekit.importance.groups import group_scores
    from prunekit.pipeline import open_workbench
    from prunekit.prune.structured import plan_from_ratios, removed_ratios
    from prunekit.search.plan import architecture, write_plan
    from prunekit.steps import calibration_batches

    wb = open_workbench(str(base), data, seed)
    scores = group_scores(wb.model, "taylor", batches=calibration_batches(wb, 16, 32, seed + 1), seed=seed + 1)
    heads, ffn = removed_ratios(wb.model, plan_from_ratios(wb.model, scores, heads=remove, ffn=remove,
                                                                      scope="global"))
    plan = {"prunekit_plan": 1, "granularity": "structured", "architecture": architecture(wb.model),
            "heads": heads, "ffn": ffn, "importance": "taylor"}
    write_plan(path, plan)
    return path


def zero_plan(base: Path, data: DataOptions, path: Path, seed: int) -> Path:
    """A structured plan for the baseline that removes nothing: the dense row recovers through the same code."""
    from prunekit.pipeline import open_workbench
    from prunekit.search.plan import architecture, write_plan

    arch = architecture(open_workbench(str(base), data, seed).model)
    zeros = {i: 0.0 for i in range(arch["num_layers"])}
    write_plan(path, {"prunekit_plan": 1, "granularity": "structured", "architecture": arch,
                      "heads": zeros, "ffn": dict(zeros), "importance": "taylor"})
    return path


def smollm_rows(args: argparse.Namespace) -> list[dict]:
    from prunekit.pipeline_lm import prune_lm
    from prunekit.prune.oneshot import OneShotSettings
    from prunekit.search.plan import oneshot_ratios, read_plan

    model, data = "smollm2-135m", "wikipedia"
    lm = {"calib_samples": args.lm_calib, "seq_len": 512, "eval_samples": args.lm_eval, "seed": args.seed,
          "force": True}
    rows = []
    baseline = None

    def run(name: str, settings: OneShotSettings, evaluations: int, search_seconds: float, plan=None) -> None:
        nonlocal baseline
        out = WORK / ("lm-" + name.split(" ")[0].replace("/", "-"))
        report = prune_lm(model, data, out, settings, baseline=baseline, plan=plan, **lm)
        baseline = baseline or report["stages"][0]["metrics"]
        rows.append({"model": "SmolLM2-135M", "method": name, "metric": "perplexity",
                     "value": report["perplexity"]["pruned"], "baseline": report["perplexity"]["dense"],
                     "evaluations": evaluations, "search_seconds": search_seconds,
                     "prune_recover_seconds": report["prune_seconds"],
                     "block_sparsity": report["block_sparsity_targets"],
                     "mlp_sparsity": report.get("mlp_sparsity_targets"),
                     "calibration_stream": settings.stream})
        print(json.dumps(rows[-1]), flush=True)
        shutil.rmtree(out, ignore_errors=True)  # 0.3 GB each; the numbers are in the report above

    run("uniform Wanda 50 %", OneShotSettings(method="wanda", sparsity=0.5, layer_ratios="uniform"), 0, 0.0)
    run("OWL Wanda 50 % (outlier-weighted)", OneShotSettings(method="wanda", sparsity=0.5, layer_ratios="owl"), 0, 0.0)
    run("global ranking Wanda 50 % (one threshold on all blocks' scores)",
        OneShotSettings(method="wanda", sparsity=0.5, layer_ratios="global"), 0, 0.0)
    t0 = time.perf_counter()
    summary = search(model, data, WORK / "lm-plan", "params=0.5", evals=args.evals, steps=args.steps,
                     ratios=args.lm_ratios, opts=SearchData(task="lm", seq_len=256, lm_calib_samples=32,
                                                            lm_eval_windows=8, lm_val_windows=args.lm_val,
                                                            lm_space=args.lm_space, seed=args.seed), force=True)
    seconds = time.perf_counter() - t0
    plan = read_plan(WORK / "lm-plan" / "plan.yaml")
    blocks, mlp = oneshot_ratios(plan)
    search_d = summary["plan"]["search"]
    used = search_d["real_evaluations"] + (search_d["sensitivity_evaluations"] or 0) + (
        summary["search"].get("distinct_plans", 0) if args.lm_space == "profile" else 0)
    how = "profile grid" if args.lm_space == "profile" else "SA"
    run(f"prunekit search Wanda 50 % ({how}, params=0.5): {plan['scores']['chosen']}",
        OneShotSettings(method="wanda", sparsity=0.5, block_ratios=blocks, mlp_ratios=mlp), used, seconds, plan)
    scores = plan["scores"]
    for row, key in ((rows[0], "uniform_validation"), (rows[-1], "validation")):
        row["search_validation"] = scores[key]
        row["search_validation_halves"] = scores.get(f"{key}_halves")
    rows[-1]["candidates"] = [{k: c[k] for k in ("label", "real", "halves", "proxy")}
                              for c in summary["search"]["candidates"]]
    return rows


def recovery_of(epochs: float, distill: bool, lr: float | None) -> dict:
    """A MiniLM group's key: rows compare only within the same recovery (no recovery: the lr does not matter)."""
    return {"epochs": epochs, "distill": bool(distill and epochs), "lr": lr if epochs else None}


def _recovery_label(rec: dict | None) -> str:
    """'1 epoch at lr 0.0002', '0.25 epochs at lr 0.0002, distilled'; 'none' for one-shot rows and rows without
    recovery."""
    if not rec or not rec["epochs"]:
        return "none"
    return (f"{rec['epochs']:g} epoch" + ("s" if rec["epochs"] != 1 else "") + f" at lr {rec['lr']:g}"
            + (", distilled" if rec["distill"] else ""))


def group_of(r: dict) -> str:
    """A row's group: its removal budget and recovery (rows compare only within a group)."""
    return json.dumps([r.get("remove", DEFAULT_REMOVE), r.get("recovery")], sort_keys=True)


def _uniform_of(r: dict, rows: list[dict]) -> dict | None:
    """The uniform row of ``r``'s group (None for the uniform row itself)."""
    u = next((x for x in rows if x["model"] == r["model"] and group_of(x) == group_of(r)
              and x["method"].startswith("uniform")), None)
    return None if u is r else u


def _seeds_se(a: list[float], b: list[float]) -> float:
    """The standard error of the difference of two rows' means over seeds, from each row's spread."""
    return math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))


def _with_test_split(r: dict, rows: list[dict]) -> str:
    """± the SE of the difference to uniform with the test split's sampling added: the paired SE over test
    examples of (mean correctness over seeds, this row − uniform), combined with the seeds' SE; conservative
    (the per-example differences hold some seed noise too). Empty for rows measured before predictions were
    kept."""
    u = _uniform_of(r, rows)
    if u is None or not all(r.get("test_correct") or [None]) or not all(u.get("test_correct") or [None]):
        return ""
    per_example = [np.mean([[c == "1" for c in s] for s in x["test_correct"]], axis=0) for x in (r, u)]
    d = per_example[0] - per_example[1]
    se_test = 100 * float(d.std(ddof=1)) / math.sqrt(len(d))
    a, b = r["values"], u["values"]
    se_seeds = _seeds_se(a, b) if min(len(a), len(b)) > 1 else 0.0
    return f"± {math.sqrt(se_test ** 2 + se_seeds ** 2):.2f}"


def _vs_uniform(r: dict, rows: list[dict]) -> str:
    """The row's difference to the uniform row of its group. MiniLM: mean over recovery seeds ± the standard error
    of the difference of two means (from each row's spread over seeds, which holds the recovery's and the
    calibration's randomness; the test split is the same for both); SmolLM2: the perplexity ratio (one run)."""
    u = _uniform_of(r, rows)
    if u is None:
        return ""
    if r["metric"] == "perplexity":
        return f"{r['value'] / u['value']:.3f}×"
    a, b = r.get("values") or [r["value"]], u.get("values") or [u["value"]]
    if len(a) < 2 or len(b) < 2:
        return f"{r['value'] - u['value']:+.2f}"
    return f"{r['value'] - u['value']:+.2f} ± {_seeds_se(a, b):.2f}"


def render(rows: list[dict], args: argparse.Namespace) -> str:
    head = ("| model | removed | method | recovery | test metric | Δ vs dense | Δ vs uniform | with the test split | "
            "evaluations used | search wall s | prune + recovery s |\n"
            "| --- | --: | --- | --- | --: | --: | --: | --: | --: | --: | --: |")
    lines = [f"Same fine-tuned baseline for every MiniLM row; every row of a group has the same recovery budget "
             "(the recovery column: epochs of fine-tuning with AdamW at that peak learning rate, distilled from the "
             "unpruned model where marked), batch 32, max length 64; removed: the share of the encoder's attention "
             "+ FFN parameters removed (structured; the issue's budget is 50 %). "
             f"SmolLM2-135M: Wanda, 50 % of the block Linear weights, {args.lm_calib} × 512 calibration tokens, "
             f"perplexity on {args.lm_eval} × 512 evaluation tokens. 2 cores, shared machine. "
             "`python bench/search.py`.", "", head]
    groups = list(dict.fromkeys(map(group_of, rows)))
    order = ("uniform", "global", "prunekit search", "L0", "unpruned")  # within a group (stable)

    def place(r: dict) -> float:
        at = next((k for k, m in enumerate(order) if r["method"].startswith(m)), len(order))
        return at + 0.5 * (CUT_NOTE in r["method"])  # the cut-only search after the default one

    rows = sorted(rows, key=lambda r: (r["model"] != "MiniLM", groups.index(group_of(r)),
                                       place(r) if r["model"] == "MiniLM" else 0))
    for r in rows:
        delta = r["value"] - r["baseline"]
        how = _recovery_label(r.get("recovery"))
        unit = "ppl" if r["metric"] == "perplexity" else "%"
        cell = f"{r['value']:.2f} {unit}"
        if len(r.get("values") or ()) > 1:  # the mean over recovery seeds, then every seed's value
            cell += " (" + " / ".join(f"{v:.2f}" for v in r["values"]) + ")"
        dfmt = f"{delta:+.2f}" if r["metric"] != "perplexity" else f"{r['value'] / r['baseline']:.3f}×"
        removed = f"{100 * r.get('remove', DEFAULT_REMOVE):g} %"
        lines.append(f"| {r['model']} | {removed} | {r['method']} | {how} | {cell} | {dfmt} | {_vs_uniform(r, rows)} | "
                     f"{_with_test_split(r, rows)} | {r['evaluations']} | "
                     f"{r['search_seconds']:.0f} | {r['prune_recover_seconds']:.0f} |")
    seeded = [r for r in rows if len(r.get("values") or ()) > 1]
    if seeded:
        lines += ["", f"MiniLM rows with several values: the mean test accuracy over recovery seeds "
                  f"{', '.join(map(str, seeded[0]['seeds']))} (each seed's value in brackets; the plan is fixed, the "
                  "seed sets the calibration batches that pick heads / neurons inside a layer and the recovery's "
                  "data order); prune + recovery s is the mean per seed. Δ vs uniform: the difference of the means "
                  "± its standard error from the two rows' spreads over seeds (a gap under 2 SE is noise); for "
                  "SmolLM2 the perplexity ratio."]
    shown = set()
    for r in rows:
        if r["model"] == "MiniLM" and r.get("finalists"):
            if json.dumps(r["finalists"]) in shown:  # one search, its plan recovered under several budgets
                continue
            shown.add(json.dumps(r["finalists"]))
            rk = r.get("finalist_ranking")
            kl = all(c.get("loss") is not None for c in r["finalists"])
            chosen = next((k for k, c in enumerate(r["finalists"])
                           if kl and c["loss"] == r.get("plan", {}).get("scores", {}).get("heldout_kl")), None)
            on = (f"{rk['examples']} examples ({rk['validation']} validation + {rk['heldout_train']} training examples "
                  "kept out of the recovery)" if rk else "validation + the training examples kept out of the recovery")
            used_by = f"{100 * r.get('remove', DEFAULT_REMOVE):g} % removed, " + " / ".join(
                _recovery_label(x.get("recovery")) for x in rows
                if x.get("finalists") and json.dumps(x["finalists"]) == json.dumps(r["finalists"]))
            measured = (f"validation accuracy after {r.get('recover_epochs'):g} epoch(s) of distilled recovery"
                        if r.get("recover_epochs") else
                        "validation accuracy of the cut model, no recovery; the best wins")
            lines += ["", f"MiniLM search used by the rows with recovery: {used_by}. Finalists ({measured}; "
                      "predicted = the sensitivity proxy, no recovery" + (
                          f"; held-out KL = mean per-example KL to the unpruned model on {on}, gain = uniform's KL − "
                          "the finalist's, paired on the same examples, with its standard error; a plan replaces "
                          f"uniform only if its gain exceeds {rk['margin'] if rk else 2:g} SE; chosen: finalist "
                          f"{chosen}" if kl else "") + "):", ""]
            if kl:
                lines += ["| finalist | predicted % | validation % | held-out KL | gain (SE) |",
                          "| --- | --: | --: | --: | --: |"]
                lines += [f"| {c['label']} {k} | {c['proxy']:.2f} | {c['real']:.2f} | {c['loss']:.4f} | "
                          f"{c['paired']['gain']:+.4f} ({c['paired']['se']:.4f}) |"
                          for k, c in enumerate(r["finalists"])]
                if rk and rk.get("note"):
                    lines += ["", rk["note"]]
            else:
                lines += ["| finalist | predicted % | validation % |", "| --- | --: | --: |"]
                lines += [f"| {c['label']} {k} | {c['proxy']:.2f} | {c['real']:.2f} |"
                          for k, c in enumerate(r["finalists"])]
    searched = [r for r in rows if r.get("candidates")]
    if searched:
        # rows measured before the stream was recorded ran Wanda on the pruned (sequential) stream
        how = {"pruned": "sequential Wanda", "dense": "Wanda calibrated on the unpruned model"}[
            searched[-1].get("calibration_stream", "pruned")]
        lines += ["", f"SmolLM2 search, real evaluations ({how}, {args.lm_val} × 256 held-out calibration "
                  "tokens scored in two halves; predicted = the dense-statistics proxy on 8 × 256):", "",
                  "| candidate | predicted ppl | validation ppl | half A | half B |", "| --- | --: | --: | --: | --: |"]
        for c in searched[-1]["candidates"]:
            a, b = c["halves"] or (float("nan"), float("nan"))
            lines.append(f"| {c['label']} | {math.exp(-c['proxy']):.2f} | {c['real']:.2f} | {a:.2f} | {b:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=float, default=1.0, help="MiniLM rows: the recovery budget, the same for "
                    "every row of a group (a table may hold groups with different budgets, see --append).")
    ap.add_argument("--distill", action="store_true",
                    help="MiniLM rows: recover by distillation from the unpruned model (as the search's finalists).")
    ap.add_argument("--plan", default=None, help="MiniLM search row: the output folder of an earlier search of this "
                    "bench (plan.yaml + search.json; its wall time and evaluations are reported) instead of searching.")
    ap.add_argument("--lr", type=float, default=DEFAULT_LR,
                    help="MiniLM rows: the recovery's peak learning rate (a group of its own; the search's finalists "
                         "recover at it too).")
    ap.add_argument("--remove", type=float, default=DEFAULT_REMOVE,
                    help="MiniLM rows: the share of the encoder's attention + FFN parameters removed (a group of its "
                         "own; the issue's benchmark is 0.5).")
    ap.add_argument("--evals", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--recover-epochs", type=float, default=None,
                    help="MiniLM search: each finalist's distilled recovery before it is measured (default 0.25).")
    ap.add_argument("--rank", choices=["kl", "accuracy"], default="kl",
                    help="MiniLM search: rank the finalists by held-out KL, paired vs uniform, or validation accuracy.")
    ap.add_argument("--lm-calib", type=int, default=128)
    ap.add_argument("--lm-eval", type=int, default=32)
    ap.add_argument("--lm-ratios", default="0.3,0.5,0.7")
    ap.add_argument("--lm-val", type=int, default=64, help="Held-out windows of the search's real evaluations.")
    ap.add_argument("--lm-space", choices=["profile", "blocks"], default="profile")
    ap.add_argument("--only", default=None,
                    help=f"minilm | smollm | comma-separated MiniLM rows ({', '.join(MINILM_ROWS)}; needs --append)")
    ap.add_argument("--append", action="store_true",
                    help="Keep the other rows of results/search.json; rerun rows replace theirs in place.")
    ap.add_argument("--seed", type=int, default=0, help="The baseline's, the search's and global ranking's seed.")
    ap.add_argument("--seeds", default=None,
                    help="MiniLM rows: the final prune + recovery runs once per seed (e.g. 0,1,2); a row's value is "
                         "their mean, every seed's value is kept (default: --seed).")
    ap.add_argument("--resume", action="store_true", help="Reuse the MiniLM rows an interrupted run finished.")
    ap.add_argument("--render", action="store_true", help="Only rewrite the Markdown table from the JSON.")
    args = ap.parse_args()
    args.seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [args.seed]
    single = tuple(args.only.split(",")) if args.only and args.only not in ("minilm", "smollm") else ()
    if single and (not set(single) <= set(MINILM_ROWS) or not args.append):
        ap.error(f"--only takes minilm, smollm or MiniLM rows among {', '.join(MINILM_ROWS)} (with --append)")
    WORK.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    previous = RESULTS / "search.json"
    old = json.loads(previous.read_text()) if previous.is_file() else None
    for r in old["rows"] if old else ():  # rows from before the recovery (then its lr) was recorded per row
        if r["model"] == "MiniLM":
            rec = r.get("recovery") or {"epochs": old["args"]["epochs"], "distill": False}
            r["recovery"] = recovery_of(rec["epochs"], rec["distill"], rec.get("lr", old["args"]["lr"]))
        if r["method"] == SEARCH_ROW and r.get("recover_epochs") == 0:  # named before both kinds shared a group
            r["method"] = SEARCH_CUT_ROW
    if args.render and old:
        rows, args = old["rows"], argparse.Namespace(**{**old["args"], "render": True})
    elif single:
        if old is None:
            ap.error("--append needs an earlier results/search.json")
        for k in ("seed", "seeds"):  # rows of one table share the seeds (once a run has set them); --epochs,
            if k in old["args"] and old["args"][k] != getattr(args, k):  # --distill and --lr start a group
                ap.error(f"--{k} {getattr(args, k)} differs from the table's {old['args'][k]}")
        for k in LM_ARGS:  # the kept SmolLM2 rows were measured with the earlier run's settings
            if k in old["args"]:
                setattr(args, k, old["args"][k])
        rows = list(old["rows"])
        for new in minilm_rows(args, single):
            at = [i for i, r in enumerate(rows) if (r["model"], r["method"], group_of(r)) ==
                  (new["model"], new["method"], group_of(new))]
            if at:
                rows[at[0]] = new
            else:
                rows.append(new)
    else:
        if args.only and old:  # keep the other model's rows from the last run
            other = "SmolLM2-135M" if args.only == "minilm" else "MiniLM"
            rows += [r for r in old["rows"] if r["model"] == other]
            kept = LM_ARGS if other == "SmolLM2-135M" else ("epochs", "lr", "seeds", "distill")
            for k in kept:  # the kept rows were measured with the earlier run's settings
                if k in old["args"]:
                    setattr(args, k, old["args"][k])
        if args.only in (None, "minilm"):
            rows = minilm_rows(args) + rows
        if args.only in (None, "smollm"):
            rows += smollm_rows(args)
    write_results("search", render(rows, args).splitlines(),
                  {"rows": rows, "args": vars(args), "versions": package_versions(), "cores": os.cpu_count()})


if __name__ == "__main__":
    main()
