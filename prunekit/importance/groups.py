"""Importance of whole groups (heads, key/value groups, FFN neurons, hidden dims, layers).

The same criteria as for single weights, summed over a group's slices (see
:func:`prunekit.prune.structured.head_groups` and friends for which slices form a group):

- ``l1`` Σ|w| and ``l2`` sqrt(Σw²) over the group's weights (biases are left out, as in the
  unstructured criteria);
- ``taylor`` Σ|w·∂L/∂w| over the group (Molchanov et al. 2019), from calibration batches or from
  per-weight tensors you already accumulated (e.g. ``prunekit.importance.Taylor().state()``);
- ``activation`` mean |activation| on calibration data: a head's output (the input of ``o``), a
  neuron's (the input of ``down``), a hidden dim's value in the residual stream entering each block;
- ``random``: seeded, the control.

Layers are ranked by :func:`layer_scores`: by default greedily, removing one layer at a time the one
whose removal raises the calibration loss least; also by the loss or logit change when one layer alone
is skipped, by block influence (1 − cos of a block's input and output), or by the sum of the layer's
head and FFN scores.

Each criterion and layer ranking is a class in :mod:`prunekit.importance.registry`; this module asks
the criterion object (:meth:`~prunekit.importance.base.Importance.elementwise`, ``reduce``,
``score_groups``, ``rank_layers``), so a registered class works here without an edit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from prunekit.arch.groups import GroupSet, TextGroup, ffn_groups, head_groups, hidden_groups, text_groups
from prunekit.arch.modules import layer_list, rnn_suffixes, skip_layer
from prunekit.arch.sites import attn_site, check_layers_removable, ffn_site, num_layers
from prunekit.arch.textnets import call_text_model, is_text_model, layer_rnn, rnn_directions, text_layout
from prunekit.errors import PrunekitError
from prunekit.importance import registry
from prunekit.importance.base import Batch, GroupScores, Importance, LossFn
from prunekit.importance.random_scores import RandomImportance
from prunekit.importance.registry import GROUPS, LAYERS, Names
from prunekit.importance.taylor import Taylor

#: the group criteria (``--importance``), read from the registry
CRITERIA = Names(lambda: registry.names(GROUPS))
#: the group criteria that need calibration batches (gradients or activations), read from the registry
DATA_GROUP_CRITERIA = Names(lambda: tuple(n for n in registry.names(GROUPS) if registry.CRITERIA[n].uses_gradients
                                          or registry.CRITERIA[n].uses_activations))
#: the layer rankings (``--layer-importance``), read from the registry
LAYER_SCORES = Names(lambda: registry.names(LAYERS))
#: how --layers ranks by default; `python bench/layer_criteria.py` compares every choice on MiniLM
DEFAULT_LAYER_SCORE = "greedy"


def _criterion(criterion: str | Importance, seed: int = 0) -> Importance:
    """A group criterion object from its name (refused in one line unless it applies to groups)."""
    return criterion if isinstance(criterion, Importance) else registry.create(criterion, GROUPS, seed)


def group_scores(
    model: nn.Module,
    criterion: str | Importance = "l2",
    *,
    batches: Sequence[Batch] | None = None,
    loss_fn: LossFn | None = None,
    weight_scores: Mapping[str, Tensor] | None = None,
    hidden: bool = True,
    layers: str | None = None,
    remove_layers: int | None = None,
    seed: int = 0,
) -> GroupScores:
    """Scores for every group of ``model`` under ``criterion`` (a name in :data:`CRITERIA`, or a criterion object).

    ``batches`` are model inputs (dicts of tensors); ``taylor`` and ``activation`` need them unless
    ``weight_scores`` (per-weight |w·g| sums keyed by parameter name, or by module name for a
    module's weight) is given for ``taylor``. ``loss_fn(model, batch)`` defaults to the model's own
    loss (the batch then needs ``labels``). ``layers``: one of :data:`LAYER_SCORES` (see
    :func:`layer_scores`); default :data:`DEFAULT_LAYER_SCORE` when batches are given, else
    ``"groups"`` (free: pass it when no layer will be removed); ``remove_layers`` lets ``greedy``
    stop early. With ``random`` the layer scores are random too.
    """
    crit = _criterion(criterion, seed)
    if is_text_model(model):
        return text_group_scores(model, crit, batches=batches, loss_fn=loss_fn, weight_scores=weight_scores)
    out = crit.score_groups(model, batches, hidden)
    if out is None:
        out = weight_group_scores(model, crit, _weight_state(model, crit, batches, loss_fn, weight_scores),
                                  hidden=hidden)
    if out.layers is None:  # a criterion that scores layers itself (random) has set them
        how = layers or (DEFAULT_LAYER_SCORE if batches else "groups")
        out.layers = layer_scores(model, how, batches=batches, scores=out, loss_fn=loss_fn, remove=remove_layers)
    return out


def text_group_scores(
    model: nn.Module,
    criterion: str | Importance = "l2",
    *,
    batches: Sequence[Batch] | None = None,
    loss_fn: LossFn | None = None,
    weight_scores: Mapping[str, Tensor] | None = None,
    seed: int = 0,
) -> GroupScores:
    """Recurrent and conv text models: one score per hidden unit (per layer and direction), conv filter
    and embedding dim, in ``GroupScores.units`` keyed by group name (:func:`prunekit.prune.textnets.text_groups`).

    ``l1``/``l2``/``taylor`` sum over every slice of a group, exactly as for heads and neurons.
    ``activation`` is the mean |value| of what the group emits over real calibration tokens: a unit's
    hidden state h_t at every step, in its own layer and direction (inner layers of a stacked RNN module
    are re-run one layer at a time with the same weights, since the module only returns its last
    layer's steps), a filter's max-pooled feature (the classifier's input), an embedding dim.
    """
    crit = _criterion(criterion, seed)
    groups = text_groups(model)
    out = GroupScores()
    units = crit.score_units(model, groups, batches)
    if units is None:
        state = _weight_state(model, crit, batches, loss_fn, weight_scores)
        units = {g.name: crit.reduce(reduce_groups(model, g.groups, _elementwise(crit, state))) for g in groups}
    out.units = units
    return out


def _text_activations(model: nn.Module, groups: list[TextGroup], batches: Sequence[Batch]) -> dict[str, Tensor]:
    layout = text_layout(model)
    sums: dict[str, Tensor] = {}
    counts: dict[str, float] = {}

    def add(name: str, x: Tensor, w: Tensor) -> None:
        """Accumulate Σ|x|·w over positions; ``w`` (one weight per position) is 1 on real tokens."""
        s = (x.detach().float().abs() * w[..., None]).reshape(-1, x.shape[-1]).sum(0).cpu()
        sums[name] = sums[name] + s if name in sums else s
        counts[name] = counts.get(name, 0.0) + float(w.sum())

    current: dict[str, Batch] = {}

    def on_embedding(module: nn.Module, args: tuple, output: Tensor) -> None:
        add("embedding", output, _token_weights(current["batch"], output))  # real tokens, when there is a mask

    def on_rnn(name: str, rnn: nn.RNNBase) -> Callable:
        # one-layer copies with the same weights, run on what the module got: every layer's h_t, not only
        # the last layer's (the module's output) or the final step's (its h_n)
        layers = [layer_rnn(rnn, i).eval() for i in range(rnn.num_layers)]
        dirs, h = rnn_directions(rnn), rnn.hidden_size

        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            x = args[0] if args else kwargs["input"]
            hx = args[1] if len(args) > 1 else kwargs.get("hx")
            for i, sub in enumerate(layers):
                part = slice(i * dirs, (i + 1) * dirs)  # this layer's rows of h0 (and c0)
                state = None if hx is None else (tuple(t[part] for t in hx) if isinstance(hx, tuple) else hx[part])
                x, _ = sub(x, state)
                out, w = _rnn_steps(x, rnn.batch_first, current["batch"])
                for d, sfx in enumerate(rnn_suffixes(rnn)):
                    add(f"{name}.l{i}{sfx}", out[..., d * h:(d + 1) * h], w)
        return hook

    def on_classifier(module: nn.Module, args: tuple) -> None:
        x, offset = args[0], 0
        for name, conv in layout.convs:
            add(name, x[:, offset:offset + conv.out_channels], torch.ones(x.shape[0], device=x.device))
            offset += conv.out_channels

    handles = [layout.embedding[1].register_forward_hook(on_embedding)]
    handles += [rnn.register_forward_pre_hook(on_rnn(n, rnn), with_kwargs=True) for n, rnn in layout.recurrent]
    if layout.convs:
        handles.append(layout.classifier[1].register_forward_pre_hook(on_classifier))
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            current["batch"] = batch
            call_text_model(model, layout, batch)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not counts:
        raise PrunekitError("activation scores saw no calibration batch")
    return {g.name: sums[g.name] / counts[g.name] for g in groups}


def _rnn_steps(out: Tensor | PackedSequence, batch_first: bool, batch: Batch) -> tuple[Tensor, Tensor]:
    """An RNN layer's per-step outputs and a weight per step: a packed run holds exactly the real tokens;
    a padded one is weighted by the batch's attention mask where its (batch, time) layout fits."""
    if isinstance(out, PackedSequence):
        return out.data, torch.ones(out.data.shape[0], device=out.data.device)
    mask = batch.get("attention_mask")
    if mask is not None and out.dim() == 3:
        mask = mask if batch_first else mask.transpose(0, 1)
        if mask.shape == out.shape[:2]:
            return out, mask.to(out.dtype)
    return out, torch.ones(out.shape[:-1], dtype=out.dtype, device=out.device)


def _need_batches(batches: Sequence[Batch] | None, what: str) -> Sequence[Batch]:
    if not batches:
        raise PrunekitError(f"{what} group scores need calibration batches")
    return batches


# ----------------------------------------------------------------------------------------------
# Weight-based: l1, l2, taylor
# ----------------------------------------------------------------------------------------------


def reduce_groups(model: nn.Module, gs: GroupSet, elementwise: Callable[[str, Tensor], Tensor | None]) -> Tensor:
    """Sum a per-weight score over each group of ``gs`` (biases skipped; a tied weight counted once).

    ``elementwise(param_name, param)`` returns a tensor shaped like the parameter, or None when it
    has no score for it (that part is then left out).
    """
    total = torch.zeros(gs.count)
    seen: set[tuple[int, int, int]] = set()
    cache: dict[tuple[int, int], Tensor] = {}
    found = False
    for part in gs.parts:
        if part.param.rpartition(".")[2].startswith("bias"):  # .bias, and an RNN's bias_ih_l0 / bias_hh_l0
            continue
        p = model.get_parameter(part.param)
        if (id(p), part.dim, part.offset) in seen:
            continue
        seen.add((id(p), part.dim, part.offset))
        if (id(p), part.dim) not in cache:
            t = elementwise(part.param, p)
            if t is None:
                continue
            if t.shape != p.shape:
                raise PrunekitError(f"score for {part.param} has shape {tuple(t.shape)}, weight {tuple(p.shape)}")
            cache[(id(p), part.dim)] = t.detach().float().movedim(part.dim, 0).reshape(p.shape[part.dim], -1).sum(1)
        vec = cache[(id(p), part.dim)].cpu()
        total += vec[part.offset:part.offset + gs.count * part.size].view(gs.count, part.size).sum(1)
        found = True
    if not found:
        where = f"layer {gs.layer} " if gs.layer is not None else ""
        raise PrunekitError(f"no per-weight scores cover any weight of the {where}{gs.kind} groups")
    return total


def _elementwise(crit: Importance, state: Mapping[str, Tensor] | None) -> Callable[[str, Tensor], Tensor | None]:
    """The per-weight score that ``crit`` sums over a group (:meth:`Importance.elementwise`)."""

    def elem(name: str, p: Tensor) -> Tensor | None:
        return crit.elementwise(name, p, state)
    return elem


def _sums_weights(crit: Importance) -> bool:
    """Whether ``crit``'s group scores are sums of per-weight scores (not its own computation)."""
    return type(crit).score_groups is Importance.score_groups


def _weight_state(model: nn.Module, crit: Importance, batches: Sequence[Batch] | None, loss_fn: LossFn | None,
                  weight_scores: Mapping[str, Tensor] | None) -> Mapping[str, Tensor] | None:
    """The per-weight statistics a gradient criterion sums: given, or accumulated over ``batches``."""
    if not crit.uses_gradients or weight_scores is not None:
        return weight_scores
    return accumulated_weights(model, _need_batches(batches, crit.name), loss_fn, crit)


def weight_group_scores(
    model: nn.Module, criterion: str | Importance, weight_scores: Mapping[str, Tensor] | None = None,
    hidden: bool = True,
) -> GroupScores:
    """l1 / l2 of the weights, or taylor from already-accumulated per-weight |w·g| tensors (any criterion
    whose group score is a sum of per-weight scores)."""
    crit = _criterion(criterion)
    if not _sums_weights(crit):
        weighted = ", ".join(n for n in CRITERIA if _sums_weights(registry.create(n, GROUPS)))
        raise PrunekitError(f"{crit.name!r} is not a weight-based group criterion ({weighted})")
    elem = _elementwise(crit, weight_scores)
    out = GroupScores()
    for hg in head_groups(model):
        out.heads[hg.layer] = crit.reduce(reduce_groups(model, hg.heads, elem))
        out.kv[hg.layer] = crit.reduce(reduce_groups(model, hg.kv, elem))
    for gs in ffn_groups(model):
        out.ffn[gs.layer] = crit.reduce(reduce_groups(model, gs, elem))
    if hidden:
        out.hidden = crit.reduce(reduce_groups(model, hidden_groups(model), elem))
    return out


def _default_loss(model: nn.Module, batch: Batch) -> Tensor:
    loss = getattr(model(**batch), "loss", None)
    if loss is None:
        raise PrunekitError("calibration batches need labels (or pass loss_fn) for gradient-based scores")
    return loss


def accumulated_weights(model: nn.Module, batches: Iterable[Batch], loss_fn: LossFn | None = None,
                        crit: Importance | None = None) -> dict[str, Tensor]:
    """Per-weight statistics of the gradient criterion ``crit`` (default Taylor: Σ|w·∂L/∂w|) over
    ``batches`` (eval mode, no update), keyed by parameter name."""
    loss_fn = loss_fn or _default_loss
    crit = crit or Taylor()
    params = dict(model.named_parameters())
    was_training = model.training
    model.eval()  # no dropout: score the network that will be measured
    try:
        for batch in batches:
            model.zero_grad(set_to_none=True)
            loss_fn(model, batch).backward()
            crit.accumulate(params)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return dict(crit.state())


def taylor_weights(model: nn.Module, batches: Iterable[Batch], loss_fn: LossFn | None = None) -> dict[str, Tensor]:
    """Per-weight Σ|w·∂L/∂w| over ``batches`` (eval mode, no update), keyed by parameter name."""
    return accumulated_weights(model, batches, loss_fn, Taylor())


# ----------------------------------------------------------------------------------------------
# Activation
# ----------------------------------------------------------------------------------------------


def _token_weights(batch: Batch, x: Tensor) -> Tensor:
    """Weight per position: the attention mask when the batch has one and it fits, else all ones."""
    mask = batch.get("attention_mask")
    if mask is not None and mask.shape == x.shape[:-1]:
        return mask.to(x.dtype)
    return torch.ones(x.shape[:-1], dtype=x.dtype, device=x.device)


@torch.no_grad()
def activation_scores(model: nn.Module, batches: Iterable[Batch], hidden: bool = True) -> GroupScores:
    """Mean |activation| per head, kv group (mean of its query heads), neuron and hidden dim."""
    n = num_layers(model)
    sums: dict[tuple[str, int], Tensor] = {}
    counts: dict[tuple[str, int], float] = {}
    current: dict[str, Batch] = {}

    def collect(key: tuple[str, int]) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            x = args[0] if args else kwargs["hidden_states"]
            w = _token_weights(current["batch"], x)
            s = (x.detach().float().abs() * w[..., None]).reshape(-1, x.shape[-1]).sum(0).cpu()
            sums[key] = sums[key] + s if key in sums else s
            counts[key] = counts.get(key, 0.0) + float(w.sum())
        return hook

    handles = []
    blocks = layer_list(model)[2]
    for i in range(n):
        handles.append(attn_site(model, i).o.register_forward_pre_hook(collect(("heads", i)), with_kwargs=True))
        handles.append(ffn_site(model, i).down.register_forward_pre_hook(collect(("ffn", i)), with_kwargs=True))
        if hidden:
            handles.append(blocks[i].register_forward_pre_hook(collect(("hidden", i)), with_kwargs=True))
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            current["batch"] = batch
            model(**{k: v for k, v in batch.items() if k != "labels"})
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not counts:
        raise PrunekitError("activation scores saw no calibration batch")
    out = GroupScores()
    for i in range(n):
        s = attn_site(model, i)
        per_dim = sums[("heads", i)] / counts[("heads", i)]
        out.heads[i] = per_dim.view(s.n_q, s.head_dim).mean(1)
        out.kv[i] = out.heads[i].view(s.n_kv, s.per_group).mean(1)
        out.ffn[i] = sums[("ffn", i)] / counts[("ffn", i)]
    if hidden:
        out.hidden = torch.stack([sums[("hidden", i)] / counts[("hidden", i)] for i in range(n)]).mean(0)
    return out


class Activation(Importance):
    """Mean |activation| a group emits on calibration data (see :func:`activation_scores` and
    :func:`text_group_scores`)."""

    name = "activation"
    help = "mean |activation| a group emits on calibration batches"
    applies = frozenset({GROUPS})
    uses_activations = True

    def score_groups(self, model: nn.Module, batches: Sequence[Batch] | None, hidden: bool) -> GroupScores:
        return activation_scores(model, _need_batches(batches, "activation"), hidden=hidden)

    def score_units(self, model: nn.Module, groups: list[TextGroup],
                    batches: Sequence[Batch] | None) -> dict[str, Tensor]:
        return _text_activations(model, groups, _need_batches(batches, "activation"))


# ----------------------------------------------------------------------------------------------
# Random and layers
# ----------------------------------------------------------------------------------------------


def random_scores(model: nn.Module, seed: int = 0) -> GroupScores:
    """Uniform scores from one generator per (kind, layer): the same on every run and process."""
    return RandomImportance(seed).score_groups(model, None, True)


def layer_scores(
    model: nn.Module,
    how: str = DEFAULT_LAYER_SCORE,
    *,
    batches: Sequence[Batch] | None = None,
    scores: GroupScores | None = None,
    loss_fn: LossFn | None = None,
    remove: int | None = None,
) -> Tensor:
    """One score per layer (higher = keep). ``python bench/layer_criteria.py`` compares them on MiniLM.

    - ``"greedy"``: remove layers one at a time, each time the one whose removal (on top of those
      already removed) raises the calibration loss least (without labels: changes the logits least);
      the score is the removal order.
      Unlike one-at-a-time scores it sees that two layers may each be harmless alone but not together.
      Costs n + (n-1) + … forward passes per batch (``remove`` stops after that many removals; the
      rest keep the order of their last costs).
    - ``"loss"``: increase of the calibration loss when the layer alone is skipped.
    - ``"skip"``: mean squared change of the output logits when the layer alone is skipped (no labels).
    - ``"bi"``: block influence, 1 − cos(input, output) of the hidden states, averaged over real
      tokens (ShortGPT; one forward pass, no labels).
    - ``"groups"``: the sum of the layer's key/value-group (head) and FFN scores in ``scores``.

    A skipped layer passes its input through unchanged (:func:`prunekit.prune.structured.skip_layer`).
    ``loss`` needs labels in the batches (or ``loss_fn``); ``greedy`` uses the logit change without.
    """
    if how != "groups":  # before the forward passes: a family whose layers cannot go says so now
        check_layers_removable(model)
    return registry.create(how, LAYERS).rank_layers(model, batches=batches, scores=scores, loss_fn=loss_fn,
                                                    remove=remove)


class FromGroups(Importance):
    name = "groups"
    help = "sum of the layer's head (key/value-group) and FFN scores: free"
    applies = frozenset({LAYERS})

    def rank_layers(self, model: nn.Module, *, batches: Sequence[Batch] | None, scores: GroupScores | None,
                    loss_fn: LossFn | None, remove: int | None) -> Tensor:
        n = num_layers(model)
        if scores is None:
            raise PrunekitError("layer scores from groups need group scores")
        return torch.stack([scores.kv.get(i, scores.heads.get(i)).sum() + scores.ffn[i].sum() for i in range(n)])


class BlockInfluence(Importance):
    name = "bi"
    help = "block influence 1 − cos(input, output) over real tokens (ShortGPT): one pass, no labels"
    applies = frozenset({LAYERS})
    uses_activations = True

    def rank_layers(self, model: nn.Module, *, batches: Sequence[Batch] | None, scores: GroupScores | None,
                    loss_fn: LossFn | None, remove: int | None) -> Tensor:
        return _block_influence(model, _need_batches(batches, f"{self.name} layer"))


class _Skipping(Importance):
    """Rankings by what skipping layers costs on the calibration batches (:class:`_SkipCost`)."""

    applies = frozenset({LAYERS})
    uses_activations = True
    #: remove layers one at a time on top of those already removed, instead of each alone
    greedy: bool = False

    def metric(self, labelled: bool) -> str:
        """What a skip costs: "loss" (needs labels or a loss_fn) or "logits" (their mean squared change)."""
        return "logits"

    def rank_layers(self, model: nn.Module, *, batches: Sequence[Batch] | None, scores: GroupScores | None,
                    loss_fn: LossFn | None, remove: int | None) -> Tensor:
        n = num_layers(model)
        batches = _need_batches(batches, f"{self.name} layer")
        was_training = model.training
        model.eval()
        try:
            labelled = loss_fn is not None or all("labels" in b for b in batches)
            cost = _SkipCost(model, batches, self.metric(labelled), loss_fn)
            if not self.greedy:
                return torch.tensor([cost([i]) for i in range(n)])
            return _greedy(cost, n, n - 1 if remove is None else min(remove, n - 1))
        finally:
            model.train(was_training)


class Greedy(_Skipping):
    name = "greedy"
    help = "remove layers one at a time, the cheapest removal first (calibration loss, else logit change)"
    greedy = True

    def metric(self, labelled: bool) -> str:
        return "loss" if labelled else "logits"


class Loss(_Skipping):
    name = "loss"
    help = "calibration loss increase when the layer alone is skipped (needs labels)"

    def metric(self, labelled: bool) -> str:
        if not labelled:
            raise PrunekitError("loss layer scores need labels in the calibration batches (or loss_fn)")
        return "loss"


class Skip(_Skipping):
    name = "skip"
    help = "mean squared logit change when the layer alone is skipped (no labels)"


class _SkipCost:
    """What skipping some blocks costs on fixed calibration batches: loss increase, or logit change."""

    def __init__(self, model: nn.Module, batches: Sequence[Batch], metric: str, loss_fn: LossFn | None) -> None:
        self.model, self.batches, self.metric = model, batches, metric
        self.loss_fn = loss_fn or _default_loss
        self.blocks = layer_list(model)[2]
        self.inputs = [{k: v for k, v in b.items() if k != "labels"} for b in batches]
        with torch.no_grad():
            self.full = [_logits(model, b) for b in self.inputs] if metric == "logits" else None
            self.base = self._measure() if metric == "loss" else 0.0

    @torch.no_grad()
    def _measure(self) -> float:
        if self.metric == "logits":
            diffs = [float((_logits(self.model, b) - f).pow(2).mean()) for b, f in zip(self.inputs, self.full,
                                                                                       strict=True)]
        else:
            diffs = [float(self.loss_fn(self.model, b)) for b in self.batches]
        return sum(diffs) / len(diffs)

    def __call__(self, skipped: Sequence[int]) -> float:
        handles = [skip_layer(self.blocks[i]) for i in skipped]
        try:
            return self._measure() - self.base
        finally:
            for h in handles:
                h.remove()


def _greedy(cost: _SkipCost, n: int, steps: int) -> Tensor:
    """Ranks from greedy removal: the first layer removed scores 0, the last one kept n - 1."""
    removed: list[int] = []
    last: dict[int, float] = {}
    for _ in range(steps):
        last = {i: cost([*removed, i]) for i in range(n) if i not in removed}
        removed.append(min(last, key=last.__getitem__))
    rest = sorted((i for i in range(n) if i not in removed), key=lambda i: last.get(i, 0.0))
    out = torch.empty(n)
    for rank, i in enumerate(removed + rest):
        out[i] = float(rank)
    return out


def token_influence(x: Tensor, y: Tensor) -> Tensor:
    """ShortGPT's block influence per token, 1 − cos(block input, block output): a block that barely
    turns the hidden state can go. The one definition both classifier and LM layer ranking use."""
    return 1.0 - nn.functional.cosine_similarity(x.float(), y.float(), dim=-1)


@torch.no_grad()
def _block_influence(model: nn.Module, batches: Sequence[Batch]) -> Tensor:
    blocks = layer_list(model)[2]
    sums, count = torch.zeros(len(blocks)), torch.zeros(len(blocks))
    current: dict[str, Batch] = {}

    def hook(i: int) -> Callable:
        def fn(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            x = args[0] if args else kwargs["hidden_states"]
            y = output[0] if isinstance(output, tuple) else output
            w = _token_weights(current["batch"], x)
            sums[i] += float((token_influence(x, y) * w).sum())
            count[i] += float(w.sum())
        return fn

    handles = [b.register_forward_hook(hook(i), with_kwargs=True) for i, b in enumerate(blocks)]
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            current["batch"] = batch
            model(**{k: v for k, v in batch.items() if k != "labels"})
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return sums / count.clamp_min(1)


def _logits(model: nn.Module, batch: Batch) -> Tensor:
    out = model(**batch)
    t = getattr(out, "logits", None)
    if t is None:
        t = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    return t.float()
