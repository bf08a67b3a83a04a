"""Saving and loading structurally pruned models, whose per-layer widths may be uneven.

transformers 5 rebuilds every layer from one global config (and has no ``pruned_heads``), so a
model whose layers differ cannot come back through ``from_pretrained``. :func:`save_pruned` writes
the usual ``save_pretrained`` folder (safetensors) plus ``prunekit_shapes.json`` with the true shapes;
:func:`load` builds the model from its config, cuts every layer to the saved shapes, then loads the
weights strictly.

Plain ``from_pretrained`` also works whenever the result fits a vanilla config: that is checked by
building the vanilla model on the meta device and comparing every weight shape and the attention
scaling, and recorded as ``vanilla_from_pretrained`` in the manifest. It holds for whole-layer
removal, FFN and hidden pruning with uniform widths, and uniform head pruning of LLaMA-style models
(explicit ``head_dim``). It does *not* hold for uniformly head-pruned BERT/DistilBERT/GPT-2 models
(unless the hidden width shrank in proportion): their head size is derived as
``hidden_size / num_attention_heads``, so fewer heads at the same width means bigger heads, and
there is no config key for the head size.
"""

from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors.torch import load_file
from torch import nn
from transformers import AutoConfig, PretrainedConfig, PreTrainedTokenizerBase

from prunekit.arch import family_for, family_for_config
from prunekit.arch.attributes import FFN_WIDTH, LAYOUT, SCALING, set_head_counts, set_int_attrs
from prunekit.arch.headbias import select_bias_heads
from prunekit.arch.modules import is_norm, layer_list
from prunekit.arch.sites import attn_site, ffn_site, find_module
from prunekit.errors import PrunekitError
from prunekit.io import textnet as _textnet  # noqa: F401 - registers its format, so load() covers text nets
from prunekit.io.atomic import atomic_output_dir, write_json_atomic
from prunekit.io.automap import drop_dangling_auto_map
from prunekit.io.documents import read_versioned_json
from prunekit.io.formats import load_saved, register_format
from prunekit.io.packed import load_packed, save_packed
from prunekit.models.lowrank import apply_low_rank_shapes, low_rank_ranks
from prunekit.prune.structured.shapes import is_uniform, model_shapes, sync_config
from prunekit.prune.surgery import reshape_blank

MANIFEST = "prunekit_shapes.json"
PACKED_WEIGHTS = "model.packed.safetensors"  # unstructured / N:M sparse weights, zeros not stored
FORMAT = "prunekit-structured"
FORMAT_VERSION = 1


def save_pruned(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase | None, out_dir: str | Path, force: bool = False
) -> dict[str, Any]:
    """Write ``model`` (safetensors + config), its tokenizer and ``prunekit_shapes.json``; returns the manifest.

    The folder appears atomically (see :func:`prunekit.io.atomic.atomic_output_dir`).
    """
    with atomic_output_dir(out_dir, force) as tmp:
        return write_pruned(model, tokenizer, tmp)


def write_pruned(model: nn.Module, tokenizer: PreTrainedTokenizerBase | None, folder: str | Path) -> dict[str, Any]:
    """The non-atomic core of :func:`save_pruned`, for callers that already own a temp output folder."""
    manifest = shapes_manifest(model)
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    drop_dangling_auto_map(folder)
    write_json_atomic(Path(folder) / MANIFEST, manifest)
    return manifest


def shapes_manifest(model: nn.Module) -> dict[str, Any]:
    """Everything :func:`load` needs besides config.json to rebuild ``model``'s modules: per-layer widths,
    ELECTRA's embedding projection and low-rank factorised layers (:mod:`prunekit.models.lowrank`)."""
    sync_config(model)
    shapes = model_shapes(model)
    ranks = low_rank_ranks(model)
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "architecture": type(model).__name__,
        **shapes,
        "embed_project": _embed_project(model),
        "head_bias": _head_bias(model),
        "vanilla_from_pretrained": not ranks and is_uniform(shapes) and _vanilla_matches(model)
        and not any("bias_heads" in layer for layer in shapes["layers"]),  # a vanilla model adds every head
    }
    if ranks:
        manifest["low_rank"] = ranks
    return manifest


def _embed_project(model: nn.Module) -> list[int] | None:
    """ELECTRA's embedding projection as [in, out]: a config only builds it while the widths differ."""
    found = find_module(model, family_for(model).embed_project)
    if found is None or not isinstance(found[1], nn.Linear):
        return None
    return [found[1].in_features, found[1].out_features]


def _head_bias(model: nn.Module) -> list[int] | None:
    """MPNet's shared per-head bias table as [buckets, heads]: it keeps every original head after head pruning."""
    found = find_module(model, family_for(model).head_bias)
    return None if found is None else list(found[1].weight.shape)


def _vanilla_matches(model: nn.Module) -> bool:
    """Would ``type(model)(model.config)`` have exactly this model's shapes and attention layout?"""
    try:
        config = type(model.config).from_dict(model.config.to_dict())
        with torch.device("meta"):
            vanilla = type(model)(config)
    except Exception:  # noqa: BLE001 - e.g. hidden_size not a multiple of the heads: not vanilla
        return False
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    want = {k: tuple(v.shape) for k, v in vanilla.state_dict().items()}
    if got != want:
        return False
    return _layout(model) == _layout(vanilla)


def _layout(model: nn.Module) -> list[tuple]:
    """What attention computes beyond weight shapes: head sizes, kv sharing, score scaling."""
    return [tuple(getattr(m, a, None) for a in LAYOUT) for m in model.modules()]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    """The folder's safetensors state dict (single file or shards); never unpickles anything."""
    index = folder / "model.safetensors.index.json"
    if (folder / PACKED_WEIGHTS).exists() and not (folder / "model.safetensors").exists():
        return load_packed(folder / PACKED_WEIGHTS)
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (folder / "model.safetensors").exists():
        files = ["model.safetensors"]
    else:
        raise PrunekitError(
            f"model folder {folder} has no .safetensors weights; prunekit does not unpickle .bin files"
        )
    state: dict[str, torch.Tensor] = {}
    for name in files:
        state.update(load_file(str(folder / name)))
    return state


load = load_saved
"""``prunekit.io.shapes.load`` (the old name): :func:`prunekit.io.formats.load_saved`. Text nets, structured
and packed folders register on import of this module, plain transformers folders, built-in names and hub ids
on import of :mod:`prunekit.io.hf` (which imports this one); :func:`prunekit.load` imports every format."""


def _load_structured(folder: Path, trust_remote_code: bool = False) -> nn.Module:
    """A folder written by :func:`save_pruned`, ready for eval: the saved shapes first, then the weights strictly."""
    manifest = read_manifest(folder)
    state = _weights(folder)
    model = build_skeleton(folder, manifest, _dtype_of(state))
    _load_strict(model, state, folder)
    return model.eval()


def read_manifest(folder: Path, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """``prunekit_shapes.json`` (or the given copy of it), checked for format and version."""
    if not (folder / "config.json").exists():
        raise PrunekitError(f"{folder} has {MANIFEST} but no config.json")
    return read_versioned_json(folder / MANIFEST, FORMAT, FORMAT_VERSION, manifest)


def build_skeleton(folder: Path, manifest: dict[str, Any], dtype: torch.dtype = torch.float32) -> nn.Module:
    """The saved model's modules with the saved shapes (per-layer widths, low-rank layers), weights not loaded."""
    config = AutoConfig.from_pretrained(folder)
    fam = family_for_config(config)
    if fam.name != manifest["family"] or len(manifest["layers"]) != getattr(config, fam.num_layers_attr):
        raise PrunekitError(f"{folder}: config.json and {MANIFEST} disagree (family or layer count)")
    model = _build(config, manifest, dtype)
    _apply_shapes(model, manifest)
    apply_low_rank_shapes(model, manifest.get("low_rank") or {})
    return model


def _dtype_of(state: dict[str, torch.Tensor]) -> torch.dtype:
    floats = [t.dtype for t in state.values() if t.is_floating_point()]
    return max(set(floats), key=floats.count) if floats else torch.float32


def save_sparse(model: nn.Module, tokenizer: PreTrainedTokenizerBase | None, folder: str | Path,
                packed: bool = True) -> None:
    """Write a masked (unstructured / N:M) model into ``folder``: config, tokenizer and either
    ``model.packed.safetensors`` (non-zeros + bitmask, so the file shrinks with sparsity; read back by
    :func:`load`) or, with ``packed=False``, the plain ``save_pretrained`` weights."""
    folder = Path(folder)
    if packed:
        # as save_pretrained does: the class is what reload builds (a model made with from_config has none yet)
        model.config.architectures = [type(model).__name__]
        model.config.save_pretrained(folder)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(folder)
        save_packed(model.state_dict(), folder / PACKED_WEIGHTS)
    else:
        model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    drop_dangling_auto_map(folder)


def _load_packed_folder(folder: Path, trust_remote_code: bool = False) -> nn.Module:
    """A model written by :func:`save_sparse`: built from its config, weights from the packed file."""
    if not (folder / "config.json").exists():
        raise PrunekitError(f"{folder} has {PACKED_WEIGHTS} but no config.json")
    state = _weights(folder)
    config = AutoConfig.from_pretrained(folder)
    cls = _transformers_class((config.architectures or [None])[0], f"{folder}: unknown model class")
    with _no_init():
        model = cls._from_config(config, dtype=_dtype_of(state))
    model.tie_weights()
    _load_strict(model, state, folder)
    return model.eval()


def _build(config: PretrainedConfig, manifest: dict[str, Any], dtype: torch.dtype) -> nn.Module:
    """An instance of the saved class from its config, built with one head per layer (any head
    count would fail some architectures' divisibility checks); real shapes are applied next."""
    name = manifest.get("architecture") or (config.architectures or [None])[0]
    cls = _transformers_class(name, "unknown model class", f" in {MANIFEST}")
    fam = family_for_config(config)
    saved = {"num_attention_heads": config.num_attention_heads}
    if fam.num_kv_heads_attr:
        saved[fam.num_kv_heads_attr] = getattr(config, fam.num_kv_heads_attr)
    # A config without head_dim (real Qwen2/Qwen2.5) derives it as hidden / heads: with one head the
    # rotary table would be hidden wide, so the saved head size is pinned while building.
    derived = getattr(config, "head_dim", None) is None and bool(manifest["layers"])
    absent = "head_dim" not in config.to_dict()

    def restore(cfg: PretrainedConfig) -> None:
        for key, value in saved.items():
            setattr(cfg, key, value)
        if derived and absent:
            vars(cfg).pop("head_dim", None)
        elif derived:
            cfg.head_dim = None

    for key in saved:
        setattr(config, key, 1)
    if derived:
        config.head_dim = int(manifest["layers"][0]["head_dim"])
    try:
        with _no_init():
            model = cls._from_config(config, dtype=dtype)
    finally:
        restore(config)
    restore(model.config)  # _from_config may have copied the config
    model.tie_weights()  # transformers 5's no_init_weights also skips tying the LM head
    return model


def _transformers_class(name: str | None, what: str, where: str = "") -> type:
    """The transformers model class a folder names; prunekit never imports a class from anywhere else."""
    cls = getattr(transformers, name or "", None)
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        raise PrunekitError(f"{what} {name!r}{where}; prunekit loads transformers classes only")
    return cls


def _no_init() -> contextlib.AbstractContextManager:
    """Skip random initialisation (the weights are about to be loaded); a no-op if unavailable."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # pragma: no cover - older/newer transformers
        return contextlib.nullcontext()
    return no_init_weights()


def _apply_shapes(model: nn.Module, manifest: dict[str, Any]) -> None:
    fam = family_for(model)
    project = manifest.get("embed_project")
    if project and fam.embed_project and find_module(model, fam.embed_project) is None:
        # hidden pruning made hidden_size == embedding_size, so the config no longer builds it
        base = getattr(model, "base_model", model)
        setattr(base, fam.embed_project, nn.Linear(*project))
    bias, table = manifest.get("head_bias"), find_module(model, fam.head_bias)
    if bias and table is not None:  # built with the config's head count; the saved table keeps every head
        parent, _, attr = table[0].rpartition(".")
        setattr(model.get_submodule(parent), attr, nn.Embedding(*bias))
    _match_norms(model, manifest["layers"])
    for i, layer in enumerate(manifest["layers"]):
        site = attn_site(model, i)
        d, nq, nkv = int(layer["head_dim"]), int(layer["q_heads"]), int(layer["kv_heads"])
        if fam.qkv_fused:
            reshape_blank(site.q, n_out=3 * nq * d)
        else:
            reshape_blank(site.q, n_out=nq * d)
            reshape_blank(site.k, n_out=nkv * d)
            reshape_blank(site.v, n_out=nkv * d)
        for module in site.extra.values():
            reshape_blank(module, n_out=nq * d)
        reshape_blank(site.o, n_in=nq * d)
        attn = site.attn
        if layer.get("bias_heads") is not None and site.bias_arg:
            select_bias_heads(attn, layer["bias_heads"], site.bias_arg)
        setattr(attn, fam.head_dim_attr, d)
        set_head_counts(attn, nq, nkv, d)
        if layer.get("scaling") is not None:
            setattr(attn, SCALING, float(layer["scaling"]))
        f = ffn_site(model, i)
        reshape_blank(f.up, n_out=int(layer["ffn"]) * (2 if f.fused else 1))
        if f.gate is not None:
            reshape_blank(f.gate, n_out=int(layer["ffn"]))
        reshape_blank(f.down, n_in=int(layer["ffn"]))
        set_int_attrs(f.owner, FFN_WIDTH, int(layer["ffn"]))


def _match_norms(model: nn.Module, layers: list[dict[str, Any]]) -> None:
    """Give each block the norms the saved one has: a config builds ModernBERT's first block without an
    attention norm (``nn.Identity``), but after layer removal a former later block, which has one, is first."""
    fam = family_for(model)
    blocks = layer_list(model)[2]
    for path in (p for p in (fam.attn_norm, fam.ffn_norm) if p):
        real = [b.get_submodule(path) for b in blocks if is_norm(b.get_submodule(path))]
        template = real[0] if real else (find_module(model, fam.final_norm) or (None, None))[1]
        for block, layer in zip(blocks, layers, strict=True):
            want = path not in layer.get("no_norm", ())
            if want == is_norm(block.get_submodule(path)) or (want and template is None):
                continue
            parent, _, attr = path.rpartition(".")
            setattr(block.get_submodule(parent) if parent else block, attr,
                    copy.deepcopy(template) if want else nn.Identity())  # weights are loaded next


def _load_strict(model: nn.Module, state: dict[str, torch.Tensor], folder: Path) -> None:
    """Load every tensor; the only keys allowed to be absent are aliases of a tied parameter."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        lines = str(err).strip().splitlines()
        detail = lines[1].strip() if len(lines) > 1 else lines[0]
        raise PrunekitError(f"{folder}: weights do not match {MANIFEST} ({detail})") from err
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded = {id(params[k]) for k in state if k in params}
    missing = [k for k in missing if not (k in params and id(params[k]) in loaded)]
    if missing or unexpected:
        raise PrunekitError(
            f"{folder}: weights and model disagree (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )


# The formats this module owns (see prunekit.io.formats); plain transformers (prunekit.io.hf) is the fallback.
register_format("structured", lambda folder: (folder / MANIFEST).is_file(), _load_structured, priority=20,
                looks_for=MANIFEST)
register_format("packed", lambda folder: (folder / PACKED_WEIGHTS).is_file(), _load_packed_folder, priority=10,
                looks_for=PACKED_WEIGHTS)
