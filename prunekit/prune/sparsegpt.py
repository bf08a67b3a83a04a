"""SparseGPT (Frantar & Alistarh 2023): prune a Linear and fix up the weights it keeps.

Optimal Brain Surgeon, made cheap: with H = 2XᵀX/n the layer's input Hessian, removing weight
w_ij changes the layer output least if the remaining weights of row i to its right absorb the error
via H⁻¹. Columns are processed left to right in blocks; each block's mask is chosen by
w² / [H⁻¹]_jj² (the OBS saliency) right before its columns are fixed, so the mask sees the already
updated weights. N:M patterns pick N of every M columns in the same way.
"""

from __future__ import annotations

import torch
from torch import Tensor

from prunekit.errors import PrunekitError


def _inverse_hessian_factor(hessian: Tensor, damp: float) -> tuple[Tensor, Tensor]:
    """Upper Cholesky factor of the damped H⁻¹ and the columns whose inputs were always zero."""
    h = hessian.clone().double()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    mean_diag = torch.diag(h).mean()
    for attempt in range(6):  # raise the damping until H is positive definite
        lam = damp * (10**attempt) * mean_diag
        try:
            chol = torch.linalg.cholesky(h + lam * torch.eye(len(h), dtype=h.dtype, device=h.device))
            inv = torch.cholesky_inverse(chol)
            return torch.linalg.cholesky(inv, upper=True).float(), dead
        except torch.linalg.LinAlgError:
            continue
    raise PrunekitError("SparseGPT: the calibration Hessian is not positive definite even with heavy damping")


@torch.no_grad()
def sparsegpt_prune(
    weight: Tensor,
    hessian: Tensor,
    *,
    sparsity: float = 0.5,
    pattern: tuple[int, int] | None = None,
    block_size: int = 128,
    damp: float = 0.01,
    pruned_before: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Pruned (out, in) weight with the kept weights updated, and its keep-mask.

    ``sparsity`` is met per block of ``block_size`` columns; with ``pattern=(n, m)`` every row keeps
    n of each m consecutive weights instead. ``damp`` adds ``damp``·mean(diag H) to H's diagonal.
    ``pruned_before`` (True = pruned by an earlier step): these weights are pruned again, first, so
    sparsity only grows across iterative steps (the update of earlier columns would otherwise revive them).
    """
    w = weight.detach().float().clone().contiguous()
    rows, cols = w.shape
    if pattern is not None:
        n_keep, m = pattern
        if cols % m:
            raise PrunekitError(f"N:M pattern {n_keep}:{m} needs the input width to be a multiple of {m}, got {cols}")
        if block_size % m:
            block_size = m * max(1, block_size // m)
    hinv, dead = _inverse_hessian_factor(hessian.to(w.device), damp)
    w[:, dead] = 0
    pruned = torch.zeros_like(w, dtype=torch.bool)
    before = None if pruned_before is None else pruned_before.to(device=w.device, dtype=torch.bool)
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        diag = torch.diag(hinv1)
        before1 = before[:, i1:i2] if before is not None else None
        if pattern is None:
            saliency = w1.pow(2) / diag.pow(2).unsqueeze(0)
            k = int(saliency.numel() * sparsity)
            if before1 is not None:  # pruned before: chosen first (saliency below any other)
                saliency = saliency.masked_fill(before1, -1.0)
                k = max(k, int(before1.sum()))
            mask1 = torch.zeros(w1.shape, dtype=torch.bool, device=w1.device)
            if k:
                idx = torch.topk(saliency.flatten(), k, largest=False, sorted=False).indices
                mask1.view(-1)[idx] = True
        else:
            mask1 = torch.zeros(w1.shape, dtype=torch.bool, device=w1.device)
        for i in range(i2 - i1):
            if pattern is not None and i % pattern[1] == 0:
                m = pattern[1]
                saliency = w1[:, i : i + m].pow(2) / diag[i : i + m].pow(2).unsqueeze(0)
                if before1 is not None:
                    saliency = saliency.masked_fill(before1[:, i : i + m], -1.0)
                idx = torch.topk(saliency, m - pattern[0], dim=1, largest=False).indices
                mask1[:, i : i + m].scatter_(1, idx, True)
                if before1 is not None:
                    mask1[:, i : i + m] |= before1[:, i : i + m]
            col = w1[:, i]
            q = col.masked_fill(mask1[:, i], 0.0)
            e = (col - q) / hinv1[i, i]
            w1[:, i:] -= e.unsqueeze(1) * hinv1[i, i:].unsqueeze(0)
            w1[:, i] = q
            err1[:, i] = e
        w[:, i1:i2] = w1
        pruned[:, i1:i2] = mask1
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    w[pruned] = 0.0
    return w.to(weight.dtype), ~pruned
