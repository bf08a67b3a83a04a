"""Learned structure: hard-concrete L0 gates on heads, FFN neurons and layers (Louizos et al. 2018),
driven to a size budget by a Lagrangian (as CoFi, Xia et al. 2022), then removed for real.

Every attention head (key/value group under GQA), FFN neuron and layer gets a gate ``z`` in [0, 1]:
a head's output (the input columns of ``o``) and a neuron's (the input of ``down``) are multiplied by
it, and a layer's contribution to the residual stream is ``x + z·(block(x) − x)``. During fine-tuning
the gates are sampled from the hard-concrete distribution (exact zeros and ones have mass), and the
gates feel ``λ·(E[size] − t)²``, where E[size] is the expected kept fraction of the gated parameters and
``t`` moves linearly from 1 to the budget over the first half of training (CoFi's ramp). λ follows plain
gradient *ascent* (λ += η·(E[size] − t)² after every step).

Why only the quadratic term: CoFi's linear term λ1·(E − t) has a gradient whose size does not shrink as E
reaches t, and λ1 (an integral of the gap) keeps its sign long after the crossing, so the gates kept closing
past the target (MiniLM kept 16.3 M parameters where the budget allows 17.4 M). The quadratic term's gradient
shrinks with the gap and reverses the moment E crosses t. Under-shooting cannot be undone after the cut,
over-shooting can: finalize trims to the budget.

The gates do not train in the weights' AdamW (:meth:`Gates.update`, a step of their own after every
backward pass). In Adam every gate moves by about the learning rate per step whatever its gradient's size,
and the gradient's *noise* sets how fast: a head's gate, whose size gradient is 64 neurons' worth and steady,
closed at full speed while the neurons' gates, dominated by noisy task gradients, hardly moved. MiniLM at
params=0.5 kept 13 of 72 heads and most FFN neurons (75.5 % test vs 82.7 % for uniform widths). The gate step
instead (1) divides each gate's gradient by the parameters it controls, so the size term pushes every gate
equally and the task term counts as loss per parameter removed, the Lagrangian's own exchange rate, and
(2) normalises by *one* second moment shared by all gates (Adam's scale-freedom without Adam's per-gate
race): a gate moves in proportion to its mean per-parameter gradient, noise does not slow it down. Being
outside AdamW, the gates also stay out of the weights' gradient clipping, and the size term is not part of
the loss, so it survives a distillation loss that replaces the model's own.
With it, MiniLM at params=0.5 kept 42 of 72 heads and 46 % of the neurons, close to uniform widths, and
E[size] met the ramp within 0.01 (80.2 % test vs 82.7 % for uniform widths; bench/results/search.md).

Layer gates are off unless asked for (``L0Settings.layers``, ``prunekit prune --learn-layers``): with
per-gate Adam, MiniLM at params=0.5 met the budget by closing layers 0–2 outright (75.4 % test), and partly
open layer gates cannot be folded into the weights.

The gates start ranked (``L0Settings.warm_spread``, ``prunekit prune --gate-warm-start``): each group's log α
starts between ``init`` (the layer's most important group by ``--importance``) and ``init − 3`` (its least), so
the size term closes the least important first instead of waiting for the noisy task gradient to order equal
gates. With a quarter epoch distilled (about 50 gated steps) MiniLM went from 73.70 % to 78.65 % test (3 seeds;
bench/results/search.md now, and at commit 23e67f4 for the equal starts), with one epoch from 81.02 % to 81.61 %.

Afterwards the deterministic gates decide: a group whose gate is 0 goes (then the lowest-log α groups,
until the budget holds exactly), kept heads' and neurons' gate values are folded into ``o`` / ``down``
columns, and :func:`prunekit.prune.structured.apply_plan` cuts the model physically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from prunekit.arch import transformer_layers
from prunekit.errors import PrunekitError
from prunekit.prune.structured import StructuredPlan, apply_plan, attn_site, ffn_site, num_layers
from prunekit.prune.surgery import in_dim
from prunekit.search.budget import Budget, structured_units

if TYPE_CHECKING:
    from prunekit.prune.structured import GroupScores

LIMIT_L, LIMIT_R, BETA = -0.1, 1.1, 2.0 / 3.0


@dataclass
class L0Settings:
    """``gate_lr``: the per-step move of log α of a gate with a typical (RMS) gradient; ``lambda_lr``: η, the
    plain ascent step of the multiplier (λ += η·gap² per step); ``warmup``: share of the gated steps over which
    the target moves from 1 to the budget; ``init``: initial log α (gates open); ``betas``: the gate step's
    momentum and second-moment decay."""

    gate_lr: float = 0.1
    lambda_lr: float = 100.0  # a gap of 0.1 adds 1 to λ per step (λ in units of the task gradient RMS)
    warmup: float = 0.5
    init: float = 3.0
    gqa: str = "groups"
    layers: bool = False  # layer gates: see the module docstring
    betas: tuple[float, float] = (0.5, 0.99)  # 0.9 lags the ramp, then overshoots it by 0.13
    # log α spread of the ranked start (Gates.warm_start): the most important group of a layer starts at
    # ``init``, the least at ``init - warm_spread``; 0 = every gate starts at ``init`` (see the module docstring)
    warm_spread: float = 3.0


def _deterministic(log_alpha: Tensor) -> Tensor:
    return (torch.sigmoid(log_alpha) * (LIMIT_R - LIMIT_L) + LIMIT_L).clamp(0.0, 1.0)


def _sample(log_alpha: Tensor) -> Tensor:
    u = torch.rand_like(log_alpha).clamp(1e-6, 1 - 1e-6)
    s = torch.sigmoid((torch.log(u) - torch.log(1 - u) + log_alpha) / BETA)
    return (s * (LIMIT_R - LIMIT_L) + LIMIT_L).clamp(0.0, 1.0)


def _p_open(log_alpha: Tensor) -> Tensor:
    """P(z > 0) of a hard-concrete gate."""
    return torch.sigmoid(log_alpha - BETA * math.log(-LIMIT_L / LIMIT_R))


class Gates(nn.Module):
    """All gates of one model (their log α), their hooks, the expected size, the Lagrangian and the gates'
    own optimizer step."""

    def __init__(self, model: nn.Module, budget: Budget, total_steps: int,
                 settings: L0Settings | None = None) -> None:
        super().__init__()

        s = settings or L0Settings()
        if budget.kind != "params":
            raise PrunekitError(f"--learn-structure supports params= budgets (got {budget}); the expected size "
                                "is counted in parameters")
        self.s, self.budget, self.total_steps = s, budget, max(1, total_steps)
        self.units = structured_units(model, ("heads", "ffn"), gqa=s.gqa)
        n = num_layers(model)
        self.n_layers = n
        self.heads = nn.ParameterList()  # log α of each head (kv group under GQA), per layer
        self.ffn = nn.ParameterList()  # log α of each FFN neuron, per layer
        self.head_dim, self.per_gate = [], []
        for i in range(n):
            a, f = attn_site(model, i), ffn_site(model, i)
            groups = a.n_kv if (a.per_group > 1 and s.gqa == "groups") else a.n_q
            self.heads.append(nn.Parameter(torch.full((groups,), s.init)))
            self.ffn.append(nn.Parameter(torch.full((f.width,), s.init)))
            self.head_dim.append(a.head_dim)
            self.per_gate.append(a.n_q // groups)
        self.layer = nn.Parameter(torch.full((n,), s.init))
        self.register_buffer("lam", torch.zeros(()))  # the multiplier: raised by dual_step, never descended
        self.attn_params = torch.tensor([float(u.params) for u in self.units if u.kind == "heads"])
        self.ffn_params = torch.tensor([float(u.params) for u in self.units if u.kind == "ffn"])
        self.total = float(self.attn_params.sum() + self.ffn_params.sum())
        self.step = 0
        self.updates = 0
        self._m: list[Tensor] = []  # the gate step's first moments (one per gate tensor) ...
        self._v = torch.zeros(())  # ... and the task gradients' second moment, shared by all gates
        self.z: dict[str, list[Tensor] | Tensor] = {}
        self.trajectory: list[dict[str, Any]] = []
        self._handles = []
        _, blocks = transformer_layers(model)
        for i in range(n):
            a, f = attn_site(model, i), ffn_site(model, i)
            self._handles.append(a.o.register_forward_pre_hook(self._head_hook(i)))
            self._handles.append(f.down.register_forward_pre_hook(self._ffn_hook(i)))
            if s.layers:
                self._handles.append(blocks[i].register_forward_hook(self._layer_hook(i), with_kwargs=True))

    # -- gate values ------------------------------------------------------------------------------
    def resample(self) -> None:
        """New gate values for the next forward pass: sampled when training, deterministic otherwise."""
        f = _sample if self.training else _deterministic
        self.z = {"heads": [f(p) for p in self.heads], "ffn": [f(p) for p in self.ffn], "layer": f(self.layer)}

    def _head_hook(self, i: int):
        def hook(module: nn.Module, args: tuple) -> tuple:
            z = self.z["heads"][i].repeat_interleave(self.per_gate[i] * self.head_dim[i])
            return (args[0] * z.to(args[0].device, args[0].dtype), *args[1:])
        return hook

    def _ffn_hook(self, i: int):
        def hook(module: nn.Module, args: tuple) -> tuple:
            return (args[0] * self.z["ffn"][i].to(args[0].device, args[0].dtype), *args[1:])
        return hook

    def _layer_hook(self, i: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
            x = args[0] if args else kwargs["hidden_states"]
            z = self.z["layer"][i].to(x.device, x.dtype)
            out = output[0] if isinstance(output, tuple) else output
            mixed = x + z * (out - x)
            return (mixed, *output[1:]) if isinstance(output, tuple) else mixed
        return hook

    @torch.no_grad()
    def warm_start(self, scores: GroupScores) -> None:
        """Start every gate's log α from its group's importance rank within its layer (``init`` for the most
        important, ``init − warm_spread`` for the least). Why: from equal starts the noisy task gradient has to
        find the order while the size term is already closing gates; from a ranked start the least important
        close first (the size term's push, ∂E/∂log α, is larger at lower log α) and training only corrects the
        order. Scores rank within a layer, so the layers' shares are still learned."""
        s = self.s

        def ranked(v: Tensor, n: int) -> Tensor:
            v = v.detach().float().cpu().flatten()
            if len(v) != n:
                raise PrunekitError(f"warm start: {len(v)} scores for {n} gates")
            if n == 1:
                return torch.full((1,), s.init)
            rank = torch.argsort(torch.argsort(v, stable=True), stable=True).float() / (n - 1)
            return s.init - s.warm_spread * (1.0 - rank)

        for i in range(self.n_layers):
            grouped = self.per_gate[i] > 1
            h = scores.kv.get(i) if grouped else scores.heads.get(i)
            if h is not None:
                self.heads[i].copy_(ranked(h, len(self.heads[i])))
            if scores.ffn.get(i) is not None:
                self.ffn[i].copy_(ranked(scores.ffn[i], len(self.ffn[i])))

    # -- size and the Lagrangian ----------------------------------------------------------------
    def expected_keep(self) -> Tensor:
        """Expected kept fraction of the gated parameters (heads + FFN of every layer)."""
        p_layer = _p_open(self.layer) if self.s.layers else torch.ones(self.n_layers)
        size = 0.0
        for i in range(self.n_layers):
            ph = _p_open(self.heads[i]).mean()
            pf = _p_open(self.ffn[i]).mean()
            size = size + p_layer[i] * (ph * self.attn_params[i] + pf * self.ffn_params[i])
        return size / self.total

    def target(self) -> float:
        ramp = min(1.0, self.step / max(1.0, self.s.warmup * self.total_steps))
        return 1.0 - (1.0 - self.budget.keep) * ramp

    def gate_params(self) -> list[tuple[nn.Parameter, Tensor]]:
        """Every gate tensor with the number of parameters each of its gates controls."""
        out = [(p, self.attn_params[i] / len(p)) for i, p in enumerate(self.heads)]
        out += [(p, self.ffn_params[i] / len(p)) for i, p in enumerate(self.ffn)]
        if self.s.layers:
            out.append((self.layer, self.attn_params + self.ffn_params))
        return out

    def update(self) -> None:
        """One step of the gates on the task gradient the last backward pass left in ``.grad`` plus the size
        term's, then one ascent step of λ (see the module docstring for why not Adam).

        Both gradients are taken per parameter the gate controls. The task part is divided by its RMS over all
        gates (one shared, running second moment); the size part, ``λ·2·gap·∂E/∂log α``, by the mean of
        ``∂E/∂log α`` over the gates, so λ is in units of the task gradient's spread and the open gates'
        saturation (∂E/∂log α ≈ 0.01 at log α = 3) does not stall the size term until λ has grown huge."""
        b1, b2 = self.s.betas
        params = self.gate_params()
        with torch.enable_grad():
            keep = self.expected_keep()
            d_keep = torch.autograd.grad(keep, [p for p, _ in params])
        gap = float(keep.detach()) - self.target()
        with torch.no_grad():
            task = [(p.grad if p.grad is not None else torch.zeros_like(p)) * (self.total / n) for p, n in params]
            size = [d * (self.total / n) for d, (_, n) in zip(d_keep, params, strict=True)]
            size_mean = torch.cat([d.flatten() for d in size]).mean().clamp_min(1e-12)
            if not self._m:
                self._m = [torch.zeros_like(g) for g in task]
                self._v = torch.zeros(())
            self.updates += 1
            self._v = b2 * self._v + (1 - b2) * torch.cat([g.flatten() for g in task]).pow(2).mean()
            rms = float((self._v / (1 - b2 ** self.updates)).sqrt())
            for k, ((p, _), g, d) in enumerate(zip(params, task, size, strict=True)):
                step = (g / rms if rms > 0 else torch.zeros_like(g)) + float(self.lam) * 2 * gap * d / size_mean
                self._m[k].mul_(b1).add_(step, alpha=1 - b1)
                p.sub_(self.s.gate_lr * self._m[k] / (1 - b1 ** self.updates))
                p.grad = None
        self.dual_step(gap)

    @torch.no_grad()
    def dual_step(self, gap: float) -> None:
        """Plain gradient ascent on the multiplier, proportional to the violation."""
        self.lam = self.lam + self.s.lambda_lr * gap * gap

    def record(self) -> None:
        def open_(p: Tensor) -> int:
            return int((_deterministic(p) > 0).sum())

        with torch.no_grad():
            self.trajectory.append({"step": self.step, "expected_keep": float(self.expected_keep()),
                                    "target": self.target(), "lambda": float(self.lam),
                                    "heads_open": [open_(p) for p in self.heads],
                                    "ffn_open": [open_(p) for p in self.ffn],
                                    "layers_open": [int(v > 0) for v in _deterministic(self.layer)]})

    def remove_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


class GatedModel(nn.Module):
    """The model with its gates, for the ordinary recovery loop (:func:`prunekit.train.train`): every training
    forward pass first steps the gates on the gradients the previous backward pass left them, then samples
    new gate values. The gates are deliberately not a submodule: the loop's AdamW and gradient clipping
    must not see them (:meth:`Gates.update` steps them)."""

    def __init__(self, model: nn.Module, gates: Gates, record_every: int = 10) -> None:
        super().__init__()
        self.model, self.record_every = model, record_every
        self.__dict__["gates"] = gates  # not registered: see the class docstring
        self.config = model.config

    def forward(self, **batch: Any) -> Any:
        self.gates.train(self.training)
        if self.training:
            if self.gates.step > 0:
                self.gates.update()
            if self.gates.step % self.record_every == 0:
                self.gates.record()
            self.gates.step += 1
        self.gates.resample()
        return self.model(**batch)


@torch.no_grad()
def finalize(model: nn.Module, gates: Gates) -> dict[str, Any]:
    """Decide what stays (closed gates go; then the least open groups until the budget holds), fold the
    kept gates' values into the weights, remove the hooks and cut the model. Returns what was decided."""
    if gates.step > 0 and any(p.grad is not None for p, _ in gates.gate_params()):
        gates.update()  # the last training step's gradients
    gates.eval()
    gates.record()
    la_heads = [p.detach().float() for p in gates.heads]
    la_ffn = [p.detach().float() for p in gates.ffn]
    z_layer = _deterministic(gates.layer).detach() if gates.s.layers else torch.ones(gates.n_layers)
    keep_layer = [bool(v > 0) for v in z_layer]
    if not any(keep_layer):
        keep_layer[int(torch.argmax(gates.layer))] = True
    keep_h = [(_deterministic(a) > 0) for a in la_heads]
    keep_f = [(_deterministic(a) > 0) for a in la_ffn]
    for i in range(gates.n_layers):  # a kept layer keeps at least its most open head and neuron
        keep_h[i][int(torch.argmax(la_heads[i]))] = True
        keep_f[i][int(torch.argmax(la_ffn[i]))] = True
    per_h = [float(gates.attn_params[i]) / len(la_heads[i]) for i in range(gates.n_layers)]
    per_f = [float(gates.ffn_params[i]) / len(la_ffn[i]) for i in range(gates.n_layers)]

    def kept_params() -> float:
        return sum(int(keep_h[i].sum()) * per_h[i] + int(keep_f[i].sum()) * per_f[i]
                   for i in range(gates.n_layers) if keep_layer[i])

    limit = gates.budget.keep * gates.total
    if kept_params() > limit:
        order = sorted(((float(la_heads[i][j]), "h", i, j) for i in range(gates.n_layers) if keep_layer[i]
                        for j in range(len(la_heads[i])) if keep_h[i][j]),)
        order += [(float(la_ffn[i][j]), "f", i, j) for i in range(gates.n_layers) if keep_layer[i]
                  for j in range(len(la_ffn[i])) if keep_f[i][j]]
        order.sort()
        excess = kept_params() - limit
        for careful in (True, False):  # first without whole heads that would overshoot, then anything
            for _, kind, i, j in order:
                if excess <= 0:
                    break
                mask, cost = (keep_h[i], per_h[i]) if kind == "h" else (keep_f[i], per_f[i])
                if not mask[j] or int(mask.sum()) <= 1 or (careful and kind == "h" and cost > excess):
                    continue
                mask[j] = False
                excess -= cost
    # fold the kept gates' (deterministic) values into the weights the hooks were scaling
    for i in range(gates.n_layers):
        a, f = attn_site(model, i), ffn_site(model, i)
        zh = _deterministic(la_heads[i]).repeat_interleave(gates.per_gate[i] * gates.head_dim[i])
        w = a.o.weight
        shape = [1] * w.dim()
        shape[in_dim(a.o)] = -1
        w.mul_(zh.to(w.dtype).view(shape))
        zf = _deterministic(la_ffn[i])
        w = f.down.weight
        shape = [1] * w.dim()
        shape[in_dim(f.down)] = -1
        w.mul_(zf.to(w.dtype).view(shape))
    gates.remove_hooks()
    plan = StructuredPlan()
    for i in range(gates.n_layers):
        if not keep_layer[i]:
            continue
        kh = keep_h[i].nonzero().flatten()
        if gates.per_gate[i] > 1:
            kh = (kh[:, None] * gates.per_gate[i] + torch.arange(gates.per_gate[i])).flatten()
        if len(kh) < len(la_heads[i]) * gates.per_gate[i]:
            plan.heads[i] = kh.tolist()
        if int(keep_f[i].sum()) < len(la_ffn[i]):
            plan.ffn[i] = keep_f[i].nonzero().flatten().tolist()
    if not all(keep_layer):
        plan.layers = [i for i in range(gates.n_layers) if keep_layer[i]]
    apply_plan(model, plan)
    partial = [float(v) for v in z_layer if 0 < v < 1]
    return {"plan": plan.to_dict(), "kept_fraction": kept_params() / gates.total,
            "layers_kept": [i for i in range(gates.n_layers) if keep_layer[i]],
            "heads": [int(keep_h[i].sum()) * gates.per_gate[i] if keep_layer[i] else 0 for i in range(gates.n_layers)],
            "ffn": [int(keep_f[i].sum()) if keep_layer[i] else 0 for i in range(gates.n_layers)],
            "heads_dense": [len(a) * gates.per_gate[i] for i, a in enumerate(la_heads)],
            "ffn_dense": [len(a) for a in la_ffn],
            "layer_gates": [float(v) for v in z_layer],
            "note": (f"{len(partial)} kept layer gate(s) were partly open ({', '.join(f'{v:.2f}' for v in partial)}); "
                     "kept layers run at full strength after removal") if partial else None}
