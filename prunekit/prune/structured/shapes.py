"""A pruned model's true per-layer widths, and the config that summarises them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torch import nn

from prunekit.arch import family_for
from prunekit.arch.attributes import SCALING
from prunekit.arch.headbias import bias_heads
from prunekit.arch.modules import is_norm, layer_list
from prunekit.arch.sites import attn_site, ffn_site, hidden_sites


def model_shapes(model: nn.Module) -> dict[str, Any]:
    """The true per-layer widths: what a loader needs to rebuild an unevenly pruned model."""
    fam = family_for(model)
    layers, blocks = [], layer_list(model)[2]
    for i in range(len(blocks)):
        a, f = attn_site(model, i), ffn_site(model, i)
        scaling = getattr(a.attn, SCALING, None)
        layers.append({"q_heads": a.n_q, "kv_heads": a.n_kv, "head_dim": a.head_dim, "ffn": f.width,
                       "scaling": float(scaling) if isinstance(scaling, (int, float)) else None})
        block = blocks[i]
        plain = [p for p in (fam.attn_norm, fam.ffn_norm) if p and not is_norm(block.get_submodule(p))]
        if plain:  # ModernBERT's first block has no attention norm (a kept later block moved there has one)
            layers[-1]["no_norm"] = plain
        if bias_heads(a.attn) is not None:  # MPNet: which heads of the shared bias table this layer adds
            layers[-1]["bias_heads"] = bias_heads(a.attn)
    return {"family": fam.name, "model_type": model.config.model_type,
            "hidden_size": hidden_sites(model).size, "num_layers": len(layers), "layers": layers}


def is_uniform(shapes: Mapping[str, Any]) -> bool:
    """Every layer has the same head counts, head size and FFN width."""
    keys = ("q_heads", "kv_heads", "head_dim", "ffn")
    return len({tuple(layer[k] for k in keys) for layer in shapes["layers"]}) <= 1


def sync_config(model: nn.Module) -> None:
    """Write the model's real widths into its config (the largest per-layer width when uneven).

    When widths are uneven the config values are placeholders that still pass the config's own
    validation (LLaMA requires hidden_size % num_attention_heads == 0), so ``save_pretrained``
    works; the true shapes come from :func:`model_shapes`.
    """
    fam = family_for(model)
    config = model.config
    shapes = model_shapes(model)
    layers = shapes["layers"]
    config.hidden_size = shapes["hidden_size"]
    for key in fam.hidden_config_extra:
        setattr(config, key, shapes["hidden_size"])
    if getattr(config, fam.num_layers_attr) != shapes["num_layers"]:
        setattr(config, fam.num_layers_attr, shapes["num_layers"])
    setattr(config, fam.ffn_config_attr, max(x["ffn"] for x in layers))
    if getattr(config, "head_dim", None) is not None:
        config.head_dim = layers[0]["head_dim"]
    max_q, max_kv = max(x["q_heads"] for x in layers), max(x["kv_heads"] for x in layers)
    candidates = [(max_q, max_kv)] + [(q, math.gcd(q, max_kv)) for q in range(max_q, 0, -1)]
    for q, kv in candidates:
        config.num_attention_heads = q
        if fam.num_kv_heads_attr:
            setattr(config, fam.num_kv_heads_attr, kv)
        if _config_valid(config):
            break
    else:  # nothing validates (for another reason): keep the honest maxima
        config.num_attention_heads = max_q
        if fam.num_kv_heads_attr:
            setattr(config, fam.num_kv_heads_attr, max_kv)


def _config_valid(config: Any) -> bool:
    validate = getattr(config, "validate", None)
    if validate is None:
        return True
    try:
        validate()
    except Exception:  # noqa: BLE001 - any validator failure means "try the next placeholder"
        return False
    return True
