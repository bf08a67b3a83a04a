"""Recurrent and convolutional text classifiers as data: where the embedding, the recurrent stack or the
conv filters, and the classifier live.

A layout is the whole data flow prunekit relies on when it removes units, filters or embedding dims:

    embedding → RNN modules in order (each reads the previous one's [forward | reverse] output)
              or parallel Conv1d filters (each reads the embedding; pooled outputs concatenated in order)
    → one Linear classifier reading those features.

Built-in models are found through the table; any other ``nn.Module`` built from these layers is traced:
its modules are classified by type, the widths must chain, and one forward pass on token ids must call
them in that order. Anything else (a norm, an extra Linear, a custom layer with parameters) is refused
with the layer's name, because prunekit could not say what removing a unit would do to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from prunekit.errors import PrunekitError


@dataclass(frozen=True)
class TextFamily:
    """Dotted module paths of one family (``recurrent``: RNN modules in data-flow order)."""

    name: str
    model_types: tuple[str, ...]
    embedding: str
    classifier: str
    recurrent: tuple[str, ...] = ()
    convs: str | None = None  # a ModuleList of Conv1d


TEXT_FAMILIES: tuple[TextFamily, ...] = (
    TextFamily(name="recurrent", model_types=("lstm", "gru", "rnn"), embedding="embedding",
               recurrent=("rnn",), classifier="classifier"),
    TextFamily(name="textcnn", model_types=("textcnn",), embedding="embedding", convs="convs",
               classifier="classifier"),
)
TEXT_MODEL_TYPES = tuple(t for f in TEXT_FAMILIES for t in f.model_types)
EXPECTED = ("prunekit prunes text models built as Embedding → LSTM/GRU/RNN layers or parallel Conv1d filters "
            "(max-pooled) → one Linear classifier")


@dataclass
class TextLayout:
    """The resolved modules, by qualified name."""

    family: str  # the table entry, or "traced"
    embedding: tuple[str, nn.Embedding]
    classifier: tuple[str, nn.Linear]
    recurrent: list[tuple[str, nn.RNNBase]] = field(default_factory=list)
    convs: list[tuple[str, nn.Conv1d]] = field(default_factory=list)

    @property
    def feature_width(self) -> int:
        """Width of what the classifier reads."""
        if self.recurrent:
            return rnn_output_width(self.recurrent[-1][1])
        return sum(c.out_channels for _, c in self.convs)


def rnn_directions(rnn: nn.RNNBase) -> int:
    return 2 if rnn.bidirectional else 1


def rnn_output_width(rnn: nn.RNNBase) -> int:
    return rnn.hidden_size * rnn_directions(rnn)


def layer_rnn(rnn: nn.RNNBase, layer: int, direction: int | None = None) -> nn.RNNBase:
    """A one-layer copy of layer ``layer`` of ``rnn`` (both directions, or only ``direction``: 0 forward,
    1 reverse, as a forward-running module), with the same weights, device and dtype.

    What multi-layer RNN modules hide: forward hooks see only the last layer's per-step outputs, so
    scoring inner layers runs these layer by layer; an exporter runs a reverse direction as a forward one
    on per-text reversed input, which is how a padded batch reproduces a packed run."""
    dirs = rnn_directions(rnn)
    if not 0 <= layer < rnn.num_layers or direction not in (None, *range(dirs)):
        raise PrunekitError(f"{type(rnn).__name__} has {rnn.num_layers} layer(s) and {dirs} direction(s); "
                            f"no layer {layer} direction {direction}")
    extra = {"nonlinearity": rnn.nonlinearity} if isinstance(rnn, nn.RNN) else {}
    sub = type(rnn)(rnn.input_size if layer == 0 else rnn.hidden_size * dirs, rnn.hidden_size, num_layers=1,
                    bias=rnn.bias, batch_first=rnn.batch_first, bidirectional=rnn.bidirectional and direction is None,
                    **extra)
    sources = ["", "_reverse"][:dirs] if direction is None else ["_reverse" if direction else ""]
    ref = rnn.weight_ih_l0
    sub.to(device=ref.device, dtype=ref.dtype)
    with torch.no_grad():
        for source, target in zip(sources, ["", "_reverse"], strict=False):
            for kind in ("weight_ih", "weight_hh", *(("bias_ih", "bias_hh") if rnn.bias else ())):
                getattr(sub, f"{kind}_l0{target}").copy_(getattr(rnn, f"{kind}_l{layer}{source}"))
    return sub.train(rnn.training)


def is_text_model(model: nn.Module) -> bool:
    """A built-in text model, or a plain (non-transformers) module holding RNN or Conv1d layers."""
    if getattr(getattr(model, "config", None), "model_type", None) in TEXT_MODEL_TYPES:
        return True
    from transformers import PreTrainedModel

    if isinstance(model, PreTrainedModel):
        return False
    return any(isinstance(m, (nn.RNNBase, nn.Conv1d)) for m in model.modules())


def text_layout(model: nn.Module) -> TextLayout:
    """The table entry's modules for a built-in model, else the traced layout of a custom module."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    fam = next((f for f in TEXT_FAMILIES if model_type in f.model_types), None)
    layout = _from_family(model, fam) if fam is not None else _classify(model)
    _check_widths(layout)
    if fam is None:
        _check_call_order(model, layout)
    return layout


def _get(model: nn.Module, path: str, kind: type | tuple[type, ...], fam: TextFamily) -> nn.Module:
    try:
        module = model.get_submodule(path)
    except AttributeError as err:
        raise PrunekitError(f"{fam.name} entry: the model has no module {path!r}") from err
    if not isinstance(module, kind):
        raise PrunekitError(f"{fam.name} entry: {path!r} is a {type(module).__name__}, not what the entry says")
    return module


def _from_family(model: nn.Module, fam: TextFamily) -> TextLayout:
    layout = TextLayout(fam.name, (fam.embedding, _get(model, fam.embedding, nn.Embedding, fam)),
                        (fam.classifier, _get(model, fam.classifier, nn.Linear, fam)))
    layout.recurrent = [(p, _get(model, p, nn.RNNBase, fam)) for p in fam.recurrent]
    if fam.convs:
        convs = _get(model, fam.convs, nn.ModuleList, fam)
        layout.convs = [(f"{fam.convs}.{i}", c) for i, c in enumerate(convs)]
    return layout


def _refuse(name: str, module: nn.Module, why: str) -> PrunekitError:
    return PrunekitError(f"prunekit cannot trace layer {name!r} ({type(module).__name__}): {why}. {EXPECTED}")


def _classify(model: nn.Module) -> TextLayout:
    """A custom module's layers by type (:func:`_check_call_order` then checks a forward pass)."""
    embeddings, linears, recurrent, convs = [], [], [], []
    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding):
            embeddings.append((name, module))
        elif isinstance(module, nn.RNNBase):
            if getattr(module, "proj_size", 0):
                raise _refuse(name, module, "LSTM projections (proj_size) are not supported")
            recurrent.append((name, module))
        elif isinstance(module, nn.Conv1d):
            if module.groups != 1:
                raise _refuse(name, module, "grouped convolutions are not supported")
            convs.append((name, module))
        elif isinstance(module, nn.Linear):
            linears.append((name, module))
        elif any(True for _ in module.parameters(recurse=False)):
            raise _refuse(name, module, "it has parameters but is none of Embedding, LSTM/GRU/RNN, Conv1d, Linear")
    if len(embeddings) != 1:
        if embeddings:
            raise _refuse(*embeddings[1], "a second embedding")
        raise PrunekitError(f"the model has no nn.Embedding. {EXPECTED}")
    if recurrent and convs:
        raise _refuse(*convs[0], "a convolution in a model that also has recurrent layers")
    if not recurrent and not convs:
        raise PrunekitError(f"the model has no LSTM/GRU/RNN or Conv1d layer. {EXPECTED}")
    if len(linears) != 1:
        if linears:
            raise _refuse(*linears[0], "only one Linear (the classifier, last) is supported")
        raise PrunekitError(f"the model has no Linear classifier. {EXPECTED}")
    return TextLayout("traced", embeddings[0], linears[0], recurrent, convs)


def probe(model: nn.Module, layout: TextLayout) -> torch.Tensor:
    """Output of ``model(input_ids)`` on a fixed small batch of token ids (eval mode, no grad): how a custom
    module is run to trace it. A clear error if the module cannot be called like that."""
    emb = layout.embedding[1]
    ids = torch.randint(0, emb.num_embeddings, (2, 8), generator=torch.Generator().manual_seed(0))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(ids.to(emb.weight.device))
    except Exception as err:  # noqa: BLE001 - any failure means prunekit cannot follow the data flow
        raise PrunekitError(f"prunekit could not trace {type(model).__name__}: calling it on token ids failed "
                            f"({type(err).__name__}: {err}). {EXPECTED}") from err
    finally:
        model.train(was_training)
    return getattr(out, "logits", out)


def call_text_model(model: nn.Module, layout: TextLayout, batch: dict[str, torch.Tensor]) -> object:
    """Run a text model on a tokenised batch: a built-in one with its keyword inputs, a traced one on token
    ids as when it was traced (plus ``attention_mask=`` when its ``forward`` takes one)."""
    if layout.family != "traced":
        return model(**{k: v for k, v in batch.items() if k != "labels"})
    if "attention_mask" in batch and accepts_attention_mask(model):
        return model(batch["input_ids"], attention_mask=batch["attention_mask"])
    return model(batch["input_ids"])


def accepts_attention_mask(model: nn.Module) -> bool:
    import inspect

    try:
        return "attention_mask" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def _check_call_order(model: nn.Module, layout: TextLayout) -> None:
    """Run ``model(input_ids)`` once: embedding first, each RNN/conv once (RNNs in order), classifier last."""
    calls: list[str] = []
    named = [layout.embedding, *layout.recurrent, *layout.convs, layout.classifier]
    handles = [m.register_forward_hook(lambda *_, n=n: calls.append(n)) for n, m in named]
    try:
        probe(model, layout)
    finally:
        for h in handles:
            h.remove()
    for name, module in named:
        if calls.count(name) != 1:
            raise _refuse(name, module, f"it ran {calls.count(name)} times in one forward pass (expected once)")
    order = [n for n in calls if n in {r for r, _ in layout.recurrent}]
    if calls[0] != layout.embedding[0] or calls[-1] != layout.classifier[0] or order != [r for r, _ in
                                                                                         layout.recurrent]:
        raise PrunekitError(f"prunekit could not trace {type(model).__name__}: its layers ran in the order "
                            f"{calls}. {EXPECTED}")


def _check_widths(layout: TextLayout) -> None:
    """Each layer's input width must be what the layout says feeds it; else name the layer."""
    name, emb = layout.embedding
    width, source = emb.embedding_dim, f"the embedding {name!r}"
    for rname, rnn in layout.recurrent:
        if rnn.input_size != width:
            raise _refuse(rname, rnn, f"its input_size {rnn.input_size} is not the width {width} of {source}")
        width, source = rnn_output_width(rnn), f"{rname!r}"
    for cname, conv in layout.convs:
        if conv.in_channels != emb.embedding_dim:
            raise _refuse(cname, conv, f"its in_channels {conv.in_channels} is not the embedding width "
                                       f"{emb.embedding_dim}")
    if layout.convs:
        source = "the concatenated conv filters"
    cname, cls = layout.classifier
    if cls.in_features != layout.feature_width:
        raise _refuse(cname, cls, f"its in_features {cls.in_features} is not the width {layout.feature_width} "
                                  f"of {source}")
