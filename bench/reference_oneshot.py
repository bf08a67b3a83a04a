"""Benchmark: independent reference implementations of one-shot magnitude, Wanda and SparseGPT, run on
exactly the text and windows of bench/lm_oneshot.py, so that prunekit's rows can be compared with the
published algorithms on the same footing.

The issue's reference numbers came from another English text that is not available here (see the
README), so on their own they cannot be compared with rows measured on the Wikipedia asset. This script
re-implements each algorithm the way its paper and official code run it, sharing no pruning or
calibration code with prunekit (only the token windows and the model loader):

- layer by layer, batch size 1; every Linear of a layer is calibrated at once on that layer's inputs,
  which come from the already pruned layers before it (the official code's order);
- magnitude: |W| against one threshold per matrix (N:M: within every group of M inputs);
- Wanda: |W|·‖X_j‖₂, the smallest half of each output row (N:M: per group);
- SparseGPT: H = 2XᵀX/n, 1 % dampening, the upper Cholesky factor of H⁻¹, blocks of 128 columns, the
  mask picked per block by w²/[H⁻¹]_jj² (N:M: per group as the columns are reached), lazy updates;
- perplexity: exp of the mean next-token loss over the evaluation windows, with transformers' own loss.

Writes bench/results/reference_oneshot.{md,json}.

    python bench/reference_oneshot.py [--calib 32] [--eval 32] [--only wanda-50,...]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time

import torch
from _results import write_results  # bench/ is on sys.path when a script runs
from torch import Tensor, nn

ROWS = {  # name -> (method, pattern (n kept, m) or None)
    "magnitude-50": ("magnitude", None),
    "magnitude-2:4": ("magnitude", (2, 4)),
    "wanda-50": ("wanda", None),
    "wanda-2:4": ("wanda", (2, 4)),
    "sparsegpt-50": ("sparsegpt", None),
    "sparsegpt-2:4": ("sparsegpt", (2, 4)),
}


class _Stop(Exception):
    pass


@torch.no_grad()
def first_layer_inputs(model: nn.Module, windows: Tensor) -> tuple[list[Tensor], dict]:
    """Each window's hidden states entering layer 0, and the keyword arguments the layer gets."""
    seen: dict = {"x": [], "kw": {}}

    def grab(_m: nn.Module, args: tuple, kwargs: dict) -> None:
        seen["x"].append(args[0] if args else kwargs["hidden_states"])
        seen["kw"] = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        raise _Stop

    handle = model.model.layers[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        for w in windows:
            with contextlib.suppress(_Stop):
                model(input_ids=w[None], use_cache=False)
    finally:
        handle.remove()
    return seen["x"], seen["kw"]


def _layer(layer: nn.Module, x: Tensor, kw: dict) -> Tensor:
    out = layer(x, **kw)
    return out[0] if isinstance(out, tuple) else out


def magnitude_mask(w: Tensor, pattern: tuple[int, int] | None) -> Tensor:
    """True where a weight is removed."""
    metric = w.abs()
    if pattern is not None:
        return _nm_mask(metric, pattern)
    k = int(metric.numel() * 0.5)
    threshold = torch.sort(metric.flatten())[0][k]
    return metric <= threshold


def _nm_mask(metric: Tensor, pattern: tuple[int, int]) -> Tensor:
    n, m = pattern
    mask = torch.zeros_like(metric, dtype=torch.bool)
    for c in range(0, metric.shape[1], m):
        idx = torch.topk(metric[:, c : c + m], m - n, dim=1, largest=False)[1]
        mask.scatter_(1, c + idx, True)
    return mask


def wanda_mask(w: Tensor, sq_norm: Tensor, pattern: tuple[int, int] | None) -> Tensor:
    metric = w.abs() * sq_norm.sqrt().unsqueeze(0)
    if pattern is not None:
        return _nm_mask(metric, pattern)
    order = torch.sort(metric, dim=1, stable=True)[1]
    mask = torch.zeros_like(metric, dtype=torch.bool)
    mask.scatter_(1, order[:, : metric.shape[1] // 2], True)
    return mask


def sparsegpt(w: Tensor, h: Tensor, pattern: tuple[int, int] | None, block: int = 128,
              percdamp: float = 0.01) -> Tensor:
    """The pruned and updated weight (the published algorithm, written from the paper)."""
    w = w.clone().float()
    h = h.clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    h += percdamp * torch.mean(torch.diag(h)) * torch.eye(len(h))
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    rows, cols = w.shape
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        w1, hinv1 = w[:, i1:i2].clone(), hinv[i1:i2, i1:i2]
        q1, err1 = torch.zeros_like(w1), torch.zeros_like(w1)
        if pattern is None:
            score = w1**2 / torch.diag(hinv1).reshape(1, -1) ** 2
            threshold = torch.sort(score.flatten())[0][int(score.numel() * 0.5)]
            mask1 = score <= threshold
        else:
            mask1 = torch.zeros_like(w1, dtype=torch.bool)
        for i in range(i2 - i1):
            col, d = w1[:, i], hinv1[i, i]
            if pattern is not None and i % pattern[1] == 0:
                n, m = pattern
                score = w1[:, i : i + m] ** 2 / torch.diag(hinv1)[i : i + m].reshape(1, -1) ** 2
                mask1.scatter_(1, i + torch.topk(score, m - n, dim=1, largest=False)[1], True)
            q = col.clone()
            q[mask1[:, i]] = 0
            q1[:, i] = q
            e = (col - q) / d
            w1[:, i:] -= e.unsqueeze(1).matmul(hinv1[i, i:].unsqueeze(0))
            err1[:, i] = e
        w[:, i1:i2] = q1
        w[:, i2:] -= err1.matmul(hinv[i1:i2, i2:])
    return w


def _recorder(s: dict, hessian: bool):  # noqa: ANN202 - a forward hook
    def hook(_m: nn.Module, args: tuple, _out: Tensor) -> None:
        x = args[0].reshape(-1, args[0].shape[-1]).float()
        s["sq"] = s["sq"] + (x * x).sum(0)
        if hessian:  # running mean of 2xxᵀ, as the official code keeps it
            t = x.shape[0]
            s["h"] = s["h"] * (s["n"] / (s["n"] + t)) + (2 / (s["n"] + t)) * (x.t() @ x)
        s["n"] += x.shape[0]

    return hook


@torch.no_grad()
def prune(model: nn.Module, windows: Tensor, method: str, pattern: tuple[int, int] | None) -> None:
    layers = model.model.layers
    if method == "magnitude":
        for layer in layers:
            for m in layer.modules():
                if isinstance(m, nn.Linear):
                    m.weight[magnitude_mask(m.weight, pattern)] = 0
        return
    xs, kw = first_layer_inputs(model, windows)
    for layer in layers:
        linears = {n: m for n, m in layer.named_modules() if isinstance(m, nn.Linear)}
        stats: dict[str, dict] = {n: {"sq": 0.0, "h": 0.0, "n": 0} for n in linears}
        handles = [m.register_forward_hook(_recorder(stats[n], method == "sparsegpt")) for n, m in linears.items()]
        for x in xs:
            _layer(layer, x, kw)
        for hd in handles:
            hd.remove()
        for name, m in linears.items():
            s = stats[name]
            if method == "wanda":
                m.weight[wanda_mask(m.weight, s["sq"], pattern)] = 0
            else:
                m.weight.copy_(sparsegpt(m.weight, s["h"], pattern).to(m.weight.dtype))
        xs = [_layer(layer, x, kw) for x in xs]


@torch.no_grad()
def perplexity(model: nn.Module, windows: Tensor) -> float:
    nll, count = 0.0, 0
    for w in windows:
        loss = model(input_ids=w[None], labels=w[None]).loss
        nll += float(loss) * (len(w) - 1)
        count += len(w) - 1
    return math.exp(nll / count)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calib", type=int, default=32, help="calibration windows (the reference used 32)")
    ap.add_argument("--eval", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default=None, help="comma-separated row names")
    args = ap.parse_args()
    from prunekit.io.hf import load_causal_lm
    from prunekit.tasks.lm import calibration_windows, evaluation_windows, load_lm_text

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model, tokenizer = load_causal_lm("smollm2-135m")
    text = load_lm_text(tokenizer, "wikipedia")
    calib = calibration_windows(text, args.calib, args.seq_len, args.seed)  # the same windows as lm_oneshot
    evaluation = evaluation_windows(text, args.seq_len, args.eval)
    dense_state = {k: v.clone() for k, v in model.state_dict().items()}
    dense = perplexity(model, evaluation)
    print(f"dense perplexity {dense:.3f}", flush=True)
    rows = []
    for name in args.only.split(",") if args.only else ROWS:
        method, pattern = ROWS[name]
        model.load_state_dict(dense_state)
        start = time.perf_counter()
        prune(model, calib, method, pattern)
        seconds = time.perf_counter() - start
        zeros = sum(int((m.weight == 0).sum()) for layer in model.model.layers for m in layer.modules()
                    if isinstance(m, nn.Linear))
        total = sum(m.weight.numel() for layer in model.model.layers for m in layer.modules()
                    if isinstance(m, nn.Linear))
        ppl = perplexity(model, evaluation)
        rows.append({"row": name, "perplexity": ppl, "ratio": ppl / dense, "sparsity": zeros / total,
                     "prune_seconds": seconds})
        print(f"{name:16s} ppl {ppl:9.2f} ({ppl / dense:.2f}× dense)  sparsity {zeros / total:.3f}  {seconds:.0f} s",
              flush=True)
    lines = [
        "# Reference one-shot pruning of SmolLM2-135M (bench/reference_oneshot.py)",
        "",
        "Independent implementations of the published algorithms (no prunekit pruning code), on the same "
        f"Wikipedia windows as bench/lm_oneshot.py: {args.calib} calibration windows and {args.eval} evaluation "
        f"windows of {args.seq_len} tokens, seed {args.seed}, {args.threads} threads. Dense perplexity "
        f"**{dense:.2f}**.",
        "",
        "| Row | Perplexity | × dense | Sparsity | Prune s |",
        "|---|---:|---:|---:|---:|",
        *[f"| {r['row']} | {r['perplexity']:.2f} | {r['ratio']:.2f} | {100 * r['sparsity']:.1f} % | "
          f"{r['prune_seconds']:.0f} |" for r in rows],
    ]
    write_results("reference_oneshot", lines, {"args": vars(args), "dense_perplexity": dense, "rows": rows})


if __name__ == "__main__":
    main()
