"""A user's own text module (``--module pkg.mod:ClassName``) in prunekit's calling convention.

prunekit trains, measures and saves models that answer ``model(input_ids=..., attention_mask=...,
labels=...)`` with ``.loss``/``.logits`` and carry a ``config``. A user's ``nn.Module`` built from
``nn.Embedding``, ``nn.LSTM/GRU/RNN`` or parallel ``nn.Conv1d`` and one ``nn.Linear`` (traced by
:mod:`prunekit.arch.textnets`) usually takes token ids and returns logits. :func:`adapt` gives the
instance that convention *without wrapping it*: its class becomes a subclass of the user's class whose
``forward`` calls the user's, so parameter and module names (hence group names, plans and the saved
weights) stay exactly the user's, and ``load_into(MyNet(), DIR)`` still works on what prunekit saved.

Importing the named module runs the user's code; that is what ``--module`` asks for. A class merely
*recorded* in a saved folder is imported only on the user's opt-in (``trust_remote_code``) and never from
the working folder or the model folder (:func:`import_recorded_class`). Weights are only ever read from
safetensors.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn
from transformers.modeling_outputs import SequenceClassifierOutput

from prunekit.arch.textnets import accepts_attention_mask, text_layout
from prunekit.errors import PrunekitError

MODEL_TYPE = "custom"


@dataclass
class ModuleConfig:
    """What the pipeline asks of a model's config, plus how to rebuild the module (import path, kwargs)."""

    module: str | None
    module_kwargs: dict[str, Any] | None
    vocab_size: int
    num_labels: int
    id2label: dict[int, str] = field(default_factory=dict)
    pad_token_id: int = 0
    model_type: str = MODEL_TYPE

    def __post_init__(self) -> None:
        self.id2label = {int(k): str(v) for k, v in self.id2label.items()} or {
            i: str(i) for i in range(self.num_labels)}

    @property
    def label2id(self) -> dict[str, int]:
        return {v: k for k, v in self.id2label.items()}


def parse_kwargs(text: str | None) -> dict[str, Any] | None:
    """``--module-kwargs``: a JSON object, or None when not given."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise PrunekitError(f"--module-kwargs is not valid JSON ({err.msg} at column {err.colno})") from err
    if not isinstance(value, dict):
        raise PrunekitError(f"--module-kwargs must be a JSON object such as '{{\"hidden\": 64}}', got {text!r}")
    return value


#: prunekit's own text models: a folder naming one of these imports nothing but prunekit, so it loads
#: without opt-in. Exact names only: a prefix test would also pass ``prunekit_evil:X``.
BUILTIN_CLASSES = frozenset({"prunekit.models:RecurrentClassifier", "prunekit.models:TextCNN",
                             "prunekit.models.recurrent:RecurrentClassifier", "prunekit.models.textcnn:TextCNN"})


def _split(path: str) -> tuple[str, str]:
    """``pkg.mod:ClassName`` (or ``pkg.mod.ClassName``) as (module, attribute)."""
    mod_name, sep, attr = path.partition(":")
    if not sep:
        mod_name, _, attr = path.rpartition(".")
    if not mod_name or not attr:
        raise PrunekitError(f"--module {path!r}: expected pkg.module:ClassName")
    return mod_name, attr


def import_class(path: str, from_cwd: bool = True, exclude: tuple[Path, ...] = ()) -> type[nn.Module]:
    """``pkg.mod:ClassName`` (or ``pkg.mod.ClassName``), importable from ``sys.path`` or, with ``from_cwd``
    (an explicit ``--module``), the working folder as for ``python -m``. Without it (a path recorded in a
    saved folder) the working folder (``''``) is taken off ``sys.path`` for the import, and so are the
    ``exclude`` folders and anything inside them: a downloaded folder must not run a file that merely sits
    in it or beside it, even under ``python -c``, the REPL or Jupyter, whose ``sys.path`` starts with ``''``."""
    mod_name, attr = _split(path)
    what = f"--module {path!r}" if from_cwd else f"the recorded class {path!r}"
    cwd = str(Path.cwd())
    added = from_cwd and cwd not in sys.path
    if added:
        sys.path.append(cwd)
    try:
        with _search_without(not from_cwd, exclude):
            module = importlib.import_module(mod_name)
    except ImportError as err:
        where = "run from the folder holding it or put it on PYTHONPATH" if from_cwd else (
            "put it on PYTHONPATH or pass --module (which also looks in the working folder)")
        raise PrunekitError(f"{what}: cannot import {mod_name!r} ({err}); {where}") from err
    finally:
        if added:
            sys.path.remove(cwd)
    cls = module
    for part in attr.split("."):
        cls = getattr(cls, part, None)
        if cls is None:
            raise PrunekitError(f"{what}: {mod_name!r} has no {attr!r}")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise PrunekitError(f"{what} is not a torch.nn.Module class")
    return cls


@contextmanager
def _search_without(cwd: bool, folders: tuple[Path, ...] = ()) -> Iterator[None]:
    """``sys.path`` without the working folder (with ``cwd``; ``''`` and ``.`` are it) and without any
    entry that is or lies inside one of ``folders``; the entries are put back at their places afterwards,
    and any the import itself added are kept."""
    here = os.path.realpath(os.curdir)
    roots = [os.path.realpath(f) for f in folders]

    def excluded(entry: str) -> bool:
        real = os.path.realpath(entry or os.curdir)
        return (cwd and real == here) or any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots)

    removed = [(i, e) for i, e in enumerate(sys.path) if isinstance(e, str) and excluded(e)]
    for _, entry in removed:
        sys.path.remove(entry)
    try:
        yield
    finally:
        for i, entry in removed:
            sys.path.insert(i, entry)


def import_recorded_class(path: str, record: Path, trust_remote_code: bool = False) -> type[nn.Module]:
    """The class a saved folder's ``record`` names. prunekit's own classes (:data:`BUILTIN_CLASSES`) load
    as they are; any other import runs code the folder chose, so it needs ``trust_remote_code`` and even
    then never comes from the working folder or the model folder."""
    mod_name, attr = _split(path)
    if f"{mod_name}:{attr}" in BUILTIN_CLASSES:
        return import_class(path, from_cwd=False)
    if not trust_remote_code:
        raise PrunekitError(f"{record} names the class {path!r}, and importing it would run that module's code; "
                            "if you trust it pass --trust-remote-code (trust_remote_code=True), or give the class "
                            "yourself with --module pkg.mod:ClassName")
    return import_class(path, from_cwd=False, exclude=(record.parent,))


def import_path_of(module: nn.Module) -> str | None:
    """Where a module's class can be imported from again, or None (defined in ``__main__`` or a function)."""
    if isinstance(module, TextModuleAdapter):
        return module.config.module
    cls = type(module)
    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        return None
    return f"{cls.__module__}:{cls.__qualname__}"


def user_class(module: nn.Module) -> type[nn.Module]:
    """The user's own class of an adapted instance (the instance's class otherwise)."""
    cls = type(module)
    return cls.__mro__[2] if isinstance(module, TextModuleAdapter) else cls


def instantiate(path: str | type[nn.Module], kwargs: dict[str, Any] | None) -> nn.Module:
    """An instance of the class (or of the class ``path`` names, imported as ``--module`` does)."""
    cls = import_class(path) if isinstance(path, str) else path
    name = path if isinstance(path, str) else f"{cls.__module__}:{cls.__qualname__}"
    try:
        return cls(**(kwargs or {}))
    except Exception as err:  # noqa: BLE001 - the user's constructor may raise anything
        raise PrunekitError(f"--module {name!r}: {cls.__name__}(**{kwargs or {}}) failed ({type(err).__name__}: "
                            f"{err}); pass --module-kwargs") from err


def fill_kwargs(path: str, kwargs: dict[str, Any] | None, vocab_size: int, num_labels: int) -> dict[str, Any]:
    """The user's kwargs, plus ``vocab_size`` / ``num_labels`` from the tokenizer and the data when the
    class's constructor takes parameters of those names and the user did not set them."""
    out = dict(kwargs or {})
    try:
        params = inspect.signature(import_class(path).__init__).parameters
    except (TypeError, ValueError):
        return out
    for name, value in (("vocab_size", vocab_size), ("num_labels", num_labels)):
        if name in params and name not in out:
            out[name] = value
    return out


class TextModuleAdapter(nn.Module):
    """Mixed in before the user's class by :func:`adapt`; ``forward`` calls the user's ``forward`` on token
    ids (and ``attention_mask=`` when it takes one) and adds the loss."""

    config: ModuleConfig

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None,
                **_: Any) -> SequenceClassifierOutput:
        user_forward = super().forward
        if attention_mask is not None and _takes_mask(type(self)):
            out = user_forward(input_ids, attention_mask=attention_mask)
        else:
            out = user_forward(input_ids)
        logits = getattr(out, "logits", out)
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        if not isinstance(logits, Tensor) or logits.dim() != 2:
            raise PrunekitError(f"{user_class(self).__name__}.forward must return logits of shape (batch, labels), "
                                f"got {type(logits).__name__}")
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


@functools.cache
def _adapted(cls: type[nn.Module]) -> type[nn.Module]:
    return type(cls.__name__, (TextModuleAdapter, cls), {"__module__": cls.__module__,
                                                          "__qualname__": cls.__qualname__})


@functools.cache
def _takes_mask(adapted: type[nn.Module]) -> bool:
    try:
        return "attention_mask" in inspect.signature(adapted.__mro__[2].forward).parameters
    except (TypeError, ValueError):
        return False


def uses_attention_mask(model: nn.Module) -> bool:
    """Whether running ``model`` as prunekit does passes the attention mask on: built-in models always
    do, a user's module only when its own ``forward`` takes ``attention_mask``."""
    if isinstance(model, TextModuleAdapter):
        return _takes_mask(type(model))
    return accepts_attention_mask(model)


def adapt(module: nn.Module, config: ModuleConfig) -> nn.Module:
    """Give ``module`` (in place) prunekit's calling convention and ``config``; returns it."""
    if not isinstance(module, TextModuleAdapter):
        module.__class__ = _adapted(type(module))
    module.config = config
    return module


def check_fits(module: nn.Module, vocab_size: int, num_labels: int, what: str) -> int:
    """The traced module's embedding must cover the tokenizer and its classifier the labels; returns the
    embedding's row count."""
    layout = text_layout(module)
    ename, emb = layout.embedding
    cname, cls = layout.classifier
    if emb.num_embeddings < vocab_size:
        raise PrunekitError(f"{what}: embedding {ename!r} has {emb.num_embeddings} rows but the tokenizer has "
                            f"{vocab_size} tokens (give the class a vocab_size parameter or set it in --module-kwargs)")
    if cls.out_features != num_labels:
        raise PrunekitError(f"{what}: classifier {cname!r} has {cls.out_features} outputs but the data has "
                            f"{num_labels} labels (give the class a num_labels parameter or set it in --module-kwargs)")
    return emb.num_embeddings


def new_custom_model(path: str, kwargs: dict[str, Any] | None, vocab_size: int, label_names: list[str],
                     pad_token_id: int) -> nn.Module:
    """A fresh instance of the user's class for this tokenizer and these labels, traced and adapted."""
    kwargs = fill_kwargs(path, kwargs, vocab_size, len(label_names))
    module = instantiate(path, kwargs)
    size = check_fits(module, vocab_size, len(label_names), f"--module {path}")
    return adapt(module, ModuleConfig(path, kwargs, size, len(label_names), dict(enumerate(label_names)),
                                      pad_token_id))

