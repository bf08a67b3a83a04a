"""Structured pruning of decoder LMs without training: calibrated group importance, then least squares.

1. **Rank** (one dense pass over the calibration windows): a head or FFN neuron matters as much as it
   writes into the residual stream — Σ over its input columns c of the output projection of
   ‖X_c‖² · ‖W_:,c‖² (Wanda's |W|·‖X‖ carried to whole groups, on real activations). A block matters
   as much as it changes its input: 1 − cos(input, output) (ShortGPT's block influence).
2. **Plan** with :func:`prunekit.prune.structured.plan_from_ratios` (GQA, round-to, local/global — the
   same rules as classifier pruning).
3. **Reconstruct** block by block on the already-pruned model's activations: the output projections
   (o_proj, down_proj) get the kept columns W' minimising ‖X_keep W'ᵀ − X Wᵀ‖², i.e.
   (H_kk + λI) W'ᵀ = H_k: Wᵀ with H = XᵀX — the removed groups' contribution is re-expressed by the
   kept ones, which is how quality comes back without fine-tuning.
4. **Remove** physically with :func:`prunekit.prune.structured.apply_plan`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from prunekit.arch import family_for, transformer_layers
from prunekit.arch.sites import attn_site
from prunekit.importance.groups import token_influence
from prunekit.prune.calibration import CALIB_BATCH, as_rows, capture_block_inputs, collect_stats, run_block
from prunekit.prune.structured.plan import StructuredPlan
from prunekit.prune.structured.ranking import GroupScores, plan_from_ratios


def _column_energy(module: nn.Module, sq_norms: Tensor) -> Tensor:
    """‖X_c‖² · ‖W_:,c‖² per input column c of an output projection."""
    w = as_rows(module).detach().float()
    return sq_norms.float().cpu() * w.pow(2).sum(0).cpu()


@torch.no_grad()
def calibrated_scores(model: nn.Module, windows: Tensor, *, batch_size: int = CALIB_BATCH,
                      device: torch.device | None = None) -> GroupScores:
    """Group scores (heads, kv groups, FFN neurons, layers) from the dense model's calibration activations."""
    device = device or next(model.parameters()).device
    fam = family_for(model)
    _, layers = transformer_layers(model)
    inputs = capture_block_inputs(model, windows, batch_size, device, torch.device("cpu"))
    scores = GroupScores()
    influence = []
    for i, block in enumerate(layers):
        block.to(device)
        stats = collect_stats(block, [fam.o, fam.ffn_down], inputs, device, hessian=False)
        site = attn_site(model, i)
        per_col = _column_energy(site.o, stats[fam.o].sq_norms)
        heads = per_col.view(site.n_q, site.head_dim).sum(1)
        scores.heads[i] = heads
        scores.kv[i] = heads.view(site.n_kv, site.per_group).sum(1)
        scores.ffn[i] = _column_energy(block.get_submodule(fam.ffn_down), stats[fam.ffn_down].sq_norms)
        outputs = run_block(block, inputs, device)
        per_window = [token_influence(a, b).mean() for a, b in zip(inputs.hidden, outputs, strict=True)]
        influence.append(float(torch.stack(per_window).mean()))
        inputs.hidden = outputs
        block.to("cpu")
    scores.layers = torch.tensor(influence)
    return scores


def _kept_columns(plan: StructuredPlan, layer: int, module: nn.Module, head_dim: int, which: str) -> Tensor | None:
    keep = plan.heads.get(layer) if which == "o" else plan.ffn.get(layer)
    if keep is None:
        return None
    idx = torch.tensor(keep)
    return (idx[:, None] * head_dim + torch.arange(head_dim)).flatten() if which == "o" else idx


def ridge_solve(h: Tensor, rhs: Tensor, damp: float) -> Tensor:
    """(H + λI)⁻¹ rhs with λ = ``damp`` · mean(diag H): the damping keeps the solve stable when inputs are
    collinear. The one least-squares solve behind the column refit and the dense-target correction."""
    lam = damp * torch.diag(h).mean().clamp_min(1e-12)
    return torch.linalg.solve(h + lam * torch.eye(len(h), dtype=h.dtype, device=h.device), rhs)


def least_squares_columns(weight: Tensor, xtx: Tensor, keep: Tensor, damp: float = 0.01) -> Tensor:
    """Kept-column weights W' (out, k) minimising ‖X_k W'ᵀ − X Wᵀ‖² given H = XᵀX (in, in).

    ``damp`` · mean(diag H_kk) on the diagonal keeps the solve stable when kept inputs are collinear.
    """
    w = weight.detach().double()
    h = xtx.double()
    rhs = h[keep] @ w.t()  # (k, out)
    return ridge_solve(h[keep][:, keep], rhs, damp).t().to(weight.dtype)


def corrected_target(weight: Tensor, xtx: Tensor, xtd: Tensor, damp: float) -> Tensor:
    """The dense weight W̃ whose output on the pruned model's inputs X best matches the unpruned model's
    output on its own inputs X_d: W̃ = argmin ‖X W̃ᵀ − X_d Wᵀ‖² = W X_dᵀX (XᵀX + λI)⁻¹. Pruning W̃ under
    H = XᵀX then minimises the error against the dense model, up to a constant."""
    h = xtx.double()
    sol = ridge_solve(h, xtd.double() @ weight.detach().double().t().to(h.device), damp)
    return sol.t().to(weight.dtype).to(weight.device)


@torch.no_grad()
def refit_kept(weight: Tensor, target: Tensor, xtx: Tensor, keep: Tensor, *, damp: float = 0.01,
               iters: int = 200, tol: float = 1e-3, dtype: torch.dtype = torch.float32) -> tuple[Tensor, int]:
    """Kept weights of each row refit to ‖X wᵀ − X targetᵀ‖² (+ λ‖w‖²) under that row's own mask.

    SparseGPT's OBS update fixes the kept weights greedily, left to right, and Wanda/magnitude do not
    update them at all; the exact optimum for a fixed mask is one least-squares problem per row,
    (H_SS + λI) w_S = (H target)_S with H = XᵀX. Each row has its own S, so instead of one gather-and-
    solve per row this runs preconditioned conjugate gradients on all rows at once (one (out, in) @
    (in, in) product per step), starting from ``weight`` — already near the optimum after SparseGPT.
    Returns the refit weight (pruned entries stay exactly zero) and the steps taken. float32 steps
    are as good as float64 ones here (CG restarts from a good point and stops after a few dozen
    steps) at half the cost.
    """
    keep_f = keep.to(device=weight.device, dtype=dtype)
    h = xtx.to(device=weight.device, dtype=dtype)
    lam = damp * torch.diag(h).mean().clamp_min(1e-12)
    precond = keep_f / (torch.diag(h) + lam).unsqueeze(0)  # Jacobi, zero on pruned entries

    def apply(v: Tensor) -> Tensor:
        return (v @ h + lam * v) * keep_f

    x = weight.detach().to(dtype) * keep_f
    b = (target.detach().to(dtype) @ h) * keep_f
    r = b - apply(x)
    z = r * precond
    p = z.clone()
    rz = (r * z).sum(1, keepdim=True)
    b_norm = b.norm(dim=1, keepdim=True).clamp_min(1e-30)
    steps = 0
    for steps in range(1, iters + 1):  # noqa: B007 - the count is returned
        ap = apply(p)
        alpha = rz / (p * ap).sum(1, keepdim=True).clamp_min(1e-30)
        x += alpha * p
        r -= alpha * ap
        if float((r.norm(dim=1, keepdim=True) / b_norm).max()) < tol:
            break
        z = r * precond
        rz_new = (r * z).sum(1, keepdim=True)
        p = z + (rz_new / rz.clamp_min(1e-30)) * p
        rz = rz_new
    return (x * keep_f).to(weight.dtype), steps


@torch.no_grad()
def reconstruct(model: nn.Module, windows: Tensor, plan: StructuredPlan, *, batch_size: int = CALIB_BATCH,
                damp: float = 0.01, device: torch.device | None = None,
                progress: Callable[[int, int], None] | None = None) -> None:
    """Zero the removed groups' columns of o/down and refit the kept ones by least squares, block by block
    on the activations of the already-reconstructed blocks before (removed blocks are skipped)."""
    device = device or next(model.parameters()).device
    fam = family_for(model)
    _, layers = transformer_layers(model)
    kept_layers = set(plan.layers if plan.layers is not None else range(len(layers)))
    inputs = capture_block_inputs(model, windows, batch_size, device, torch.device("cpu"))
    for i, block in enumerate(layers):
        if i not in kept_layers:
            continue  # a removed block passes its input on unchanged
        block.to(device)
        site = attn_site(model, i)
        for which, name in (("o", fam.o), ("down", fam.ffn_down)):
            module = block.get_submodule(name)
            keep = _kept_columns(plan, i, module, site.head_dim, which)
            if keep is None:
                continue
            stats = collect_stats(block, [name], inputs, device, hessian=True)
            rows = as_rows(module)
            new = least_squares_columns(rows, stats[name].xtx, keep.to(rows.device), damp)
            rows.zero_()
            rows[:, keep.to(rows.device)] = new
        inputs.hidden = run_block(block, inputs, device, in_place=True)
        block.to("cpu")
        if progress is not None:
            progress(i + 1, len(layers))


def plan_lm(model: nn.Module, scores: GroupScores, *, heads: float = 0.0, ffn: float = 0.0, layers: int = 0,
            round_to: int = 1, scope: str = "local", gqa: str = "groups") -> StructuredPlan:
    """The plan for ``heads``/``ffn`` fractions and ``layers`` whole blocks (least influential first)."""
    n = len(transformer_layers(model)[1])
    return plan_from_ratios(model, scores, heads=heads, ffn=ffn, layers=layers / n if layers else 0.0,
                            scope=scope, round_to=round_to, gqa=gqa)
