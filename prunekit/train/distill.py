"""Knowledge distillation from the unpruned teacher (Hinton et al. 2015), plus intermediate-layer losses.

The logit loss is the task's (:meth:`prunekit.tasks.base.Task.distill_loss`). A classifier's is
α·CE(student, labels) + (1 − α)·T²·KL(teacher_T ‖ student_T): the usual soft-target KL between the two
distributions at temperature T; the T² keeps the soft-target gradients on the same scale as the
hard-label ones whatever the temperature.

Optionally (TinyBERT, Jiao et al. 2020; MiniLM-style attention transfer), with a layer map that pairs
each student layer i with a teacher layer ``layer_map[i]``:

- ``hidden_weight`` β: + β·mean_i MSE(P_i·h_student_i, h_teacher_map[i]) over non-padding tokens, where
  P_i is a learned Linear (student width → teacher width) when the widths differ, trained with the
  student (after hidden-width pruning or for a narrower student), and the identity otherwise;
- ``attention_weight`` γ: + γ·mean_i MSE(Ā_student_i, Ā_teacher_map[i]), Ā the attention probabilities
  averaged over heads, so layers whose heads were pruned still compare.

The default layer map spreads the student's layers evenly over the teacher's (student layer i of S ↔
teacher layer round((i+1)·T/S) − 1, so 3 of 6 → 1, 3, 5); a student made by :func:`make_student` or by
removing layers knows its exact map.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prunekit.errors import PrunekitError
from prunekit.importance.groups import group_scores
from prunekit.prune.structured import StructuredPlan, apply_plan, num_layers, plan_from_ratios
from prunekit.tasks.classification import distill_loss  # the classifier's logit loss, kept importable here

#: A task's logit loss: (student logits, teacher logits, labels, config) → loss (:meth:`Task.distill_loss`).
LogitLoss = Callable[[Tensor, Tensor, Tensor, "DistillConfig"], Tensor]


@dataclass(frozen=True)
class DistillConfig:
    alpha: float = 0.5
    temperature: float = 2.0
    hidden_weight: float = 0.0
    attention_weight: float = 0.0
    layer_map: tuple[int, ...] | None = field(default=None)
    loss: str = "mse"  # tasks whose outputs are vectors (embeddings): "mse" or "cosine" to the teacher's

    @property
    def intermediate(self) -> bool:
        return self.hidden_weight > 0 or self.attention_weight > 0

    def validate(self) -> DistillConfig:
        if not 0.0 <= self.alpha <= 1.0:
            raise PrunekitError(f"distillation alpha must be in [0, 1], got {self.alpha}")
        if self.temperature <= 0:
            raise PrunekitError(f"distillation temperature must be > 0, got {self.temperature}")
        if self.loss not in ("mse", "cosine"):
            raise PrunekitError(f"--distill-loss must be mse or cosine, got {self.loss!r}")
        if self.hidden_weight < 0 or self.attention_weight < 0:
            raise PrunekitError("distillation hidden_weight and attention_weight must be >= 0")
        return self


def uniform_layer_map(n_student: int, n_teacher: int) -> list[int]:
    """Student layer i ↔ teacher layer round((i+1)·T/S) − 1: evenly spread, always ending on the last."""
    return [max(0, round((i + 1) * n_teacher / n_student) - 1) for i in range(n_student)]


def check_layer_map(layer_map: Sequence[int], n_student: int, n_teacher: int) -> list[int]:
    layer_map = [int(j) for j in layer_map]
    if len(layer_map) != n_student:
        raise PrunekitError(f"layer_map has {len(layer_map)} entries but the student has {n_student} layers")
    if any(not 0 <= j < n_teacher for j in layer_map):
        raise PrunekitError(f"layer_map {layer_map} names teacher layers outside 0…{n_teacher - 1}")
    return layer_map


def check_teacher(student: nn.Module, teacher: nn.Module) -> None:
    """A teacher must predict the same labels, in the same order, as the student."""
    def labels(m: nn.Module) -> list[str] | None:
        cfg = getattr(m, "config", None)
        id2label = getattr(cfg, "id2label", None)
        return [str(id2label[i]) for i in range(len(id2label))] if id2label else None

    s, t = labels(student), labels(teacher)
    if s is None or t is None:
        return
    if s != t:
        raise PrunekitError(f"the teacher's labels {t} differ from the student's {s}: a teacher must predict "
                            "the same classes in the same order")


def _layers(model: nn.Module) -> int:
    return int(model.config.num_hidden_layers)


def _width(model: nn.Module) -> int:
    return int(model.config.hidden_size)


class Distiller(nn.Module):
    """The distillation loss and its learned projections (one per mapped layer when widths differ)."""

    def __init__(self, cfg: DistillConfig, student: nn.Module, teacher: nn.Module,
                 logit_loss: LogitLoss = distill_loss) -> None:
        super().__init__()
        self.cfg = cfg.validate()
        self.logit_loss = logit_loss  # the task's (classification: soft-target KL + cross-entropy)
        n_s, n_t = _layers(student), _layers(teacher)
        self.layer_map = check_layer_map(cfg.layer_map if cfg.layer_map is not None
                                         else uniform_layer_map(n_s, n_t), n_s, n_t)
        d_s, d_t = _width(student), _width(teacher)
        self.proj = (nn.ModuleList(nn.Linear(d_s, d_t, bias=False) for _ in self.layer_map)
                     if cfg.hidden_weight > 0 and d_s != d_t else None)

    def model_kwargs(self) -> dict[str, bool]:
        """What the forward passes must also return."""
        return {"output_hidden_states": self.cfg.hidden_weight > 0, "output_attentions": self.cfg.attention_weight > 0}

    def forward(self, student_out, teacher_out, labels: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        loss = self.logit_loss(student_out.logits, teacher_out.logits, labels, self.cfg)
        cfg = self.cfg
        if cfg.hidden_weight > 0:
            hs, ht = student_out.hidden_states, teacher_out.hidden_states
            mask = attention_mask.unsqueeze(-1).to(hs[0].dtype) if attention_mask is not None else None
            terms = []
            for i, j in enumerate(self.layer_map):
                s = self.proj[i](hs[i + 1]) if self.proj is not None else hs[i + 1]
                err = (s - ht[j + 1]).pow(2)
                if mask is not None:
                    terms.append((err * mask).sum() / (mask.sum() * err.shape[-1]).clamp_min(1))
                else:
                    terms.append(err.mean())
            loss = loss + cfg.hidden_weight * torch.stack(terms).mean()
        if cfg.attention_weight > 0:
            a_s, a_t = student_out.attentions, teacher_out.attentions
            if a_s is None or a_t is None or any(a is None for a in (*a_s, *a_t)):
                raise PrunekitError("attention distillation needs attention maps; this model does not return them")
            terms = [F.mse_loss(a_s[i].mean(1), a_t[j].mean(1)) for i, j in enumerate(self.layer_map)]
            loss = loss + cfg.attention_weight * torch.stack(terms).mean()
        return loss


@contextmanager
def eager_attention(*models: nn.Module, needed: bool = True) -> Iterator[None]:
    """Fused attention kernels (SDPA) do not return attention maps: switch to eager attention while
    attention maps are distilled, and back afterwards."""
    if not needed:
        yield
        return
    saved = [getattr(m.config, "_attn_implementation", None) for m in models]
    for m in models:
        if hasattr(m, "set_attn_implementation"):
            m.set_attn_implementation("eager")
        else:
            m.config._attn_implementation = "eager"
    try:
        yield
    finally:
        for m, impl in zip(models, saved, strict=True):
            if impl is not None and impl != "eager":
                if hasattr(m, "set_attn_implementation"):
                    m.set_attn_implementation(impl)
                else:
                    m.config._attn_implementation = impl


def make_student(teacher: nn.Module, layers: int | Sequence[int] | None = None, *, heads: float = 0.0,
                 ffn: float = 0.0, hidden: float = 0.0, importance: str = "l2",
                 batches: Sequence[dict[str, Tensor]] | None = None) -> tuple[nn.Module, list[int]]:
    """A smaller student initialised from the teacher's own weights; returns (student, layer map).

    ``layers``: how many teacher layers to keep, spread evenly (as :func:`uniform_layer_map`), or the
    exact teacher layer indices. ``heads``/``ffn``/``hidden`` are the fractions of each kept layer's
    heads, FFN neurons and of the hidden width to remove, ranked by ``importance`` (as in structured
    pruning, so the student keeps the teacher's most important parts rather than the first ones).
    The layer map pairs each student layer with the teacher layer it came from."""
    student = copy.deepcopy(teacher)
    n = num_layers(student)
    if layers is None:
        keep = list(range(n))
    elif isinstance(layers, int):
        if not 1 <= layers <= n:
            raise PrunekitError(f"a student needs between 1 and {n} layers, got {layers}")
        keep = uniform_layer_map(layers, n)
    else:
        keep = sorted({int(i) for i in layers})
        if not keep or any(not 0 <= i < n for i in keep):
            raise PrunekitError(f"student layers {list(layers)} must be teacher layers in 0…{n - 1}")
    if len(keep) < n:
        apply_plan(student, StructuredPlan(layers=keep))
    if heads or ffn or hidden:
        scores = group_scores(student, importance, batches=batches, layers="groups")  # no layer is ranked
        apply_plan(student, plan_from_ratios(student, scores, heads=heads, ffn=ffn, hidden=hidden))
    return student, keep
