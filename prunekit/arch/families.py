"""The declarative architecture table and the few lookups built on it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

from torch import nn

from prunekit.arch.discover import (
    block_linears,
    block_stacks,
    discovered_groups,
    discovered_layers,
    in_attention,
    is_linear,
)
from prunekit.arch.textnets import is_text_model, text_layout
from prunekit.errors import PrunekitError


@dataclass(frozen=True)
class Family:
    """Where one model family keeps its parts, as dotted paths.

    ``layers`` is relative to the *base* model (``model.base_model``) so one entry serves the bare
    encoder, the classifier and the LM alike; the per-block paths are relative to one block.
    ``None`` means the family has no such part (e.g. no gate in a BERT FFN).
    """

    name: str
    model_types: tuple[str, ...]
    layers: str
    q: str
    k: str
    v: str
    o: str
    ffn_up: str
    ffn_down: str
    ffn_gate: str | None = None
    qkv_fused: bool = False  # GPT-2 keeps q, k and v in one Conv1D (``q`` names it)
    attn_norm: str | None = None
    ffn_norm: str | None = None
    embeddings: str = "embeddings.word_embeddings"
    num_heads_attr: str = "num_attention_heads"
    num_kv_heads_attr: str | None = None
    # --- structured pruning: where the rest of the residual stream lives (paths as above) ---
    attn: str = "attention.self"  # the attention module that holds head_dim/scaling/head counts
    head_dim_attr: str = "attention_head_size"  # its head-size attribute
    ffn_config_attr: str = "intermediate_size"  # config key for the FFN width
    embed_extra: tuple[str, ...] = ()  # position/token-type embeddings added to the word embeddings
    embed_norm: str | None = None  # LayerNorm right after the embeddings (post-LN encoders)
    embed_project: str | None = None  # ELECTRA: Linear from embedding_size into the hidden width
    final_norm: str | None = None  # norm after the last block (pre-LN decoders)
    # Modules after the blocks, relative to the top model (or the base model), used if present:
    head_in: tuple[str, ...] = ()  # read the hidden state: only their input width follows hidden pruning
    head_inout: tuple[str, ...] = ()  # hidden -> hidden (pooler, classifier.dense): both widths follow
    head_norms: tuple[str, ...] = ()  # norms inside the head (MLM transforms)
    # --- what some encoders do differently (each written once, see prunekit.arch.sites) ---
    head_extra: tuple[str, ...] = ()  # per-block Linears laid out per head like q, cut with the heads, if present
    stream_norms: tuple[str, ...] = ()  # other norms over the hidden width (DeBERTa-v3's relative-embedding norm)
    ffn_fused: bool = False  # gate and up are the two halves of one Linear (``ffn_up`` names it)
    head_bias: str | None = None  # an Embedding of per-head biases all layers share (MPNet; dim 1 indexes heads)
    head_bias_arg: str | None = None  # the ``attn`` argument carrying that bias (prunekit.arch.headbias)
    hidden_config_extra: tuple[str, ...] = ()  # config keys besides hidden_size that follow hidden pruning
    num_layers_attr: str = "num_hidden_layers"  # config key counting the blocks in ``layers``
    shared_layers: str | None = None  # config key of the number of layer groups, when blocks are reused
    # Why the hidden width cannot be cut, when something outside the modules depends on it (None: it can):
    no_hidden: str | None = None


FAMILIES: tuple[Family, ...] = (
    Family(
        name="bert",
        model_types=("bert", "roberta", "xlm-roberta", "electra", "camembert", "ernie"),
        layers="encoder.layer",
        q="attention.self.query",
        k="attention.self.key",
        v="attention.self.value",
        o="attention.output.dense",
        ffn_up="intermediate.dense",
        ffn_down="output.dense",
        attn_norm="attention.output.LayerNorm",
        ffn_norm="output.LayerNorm",
        embed_extra=("embeddings.position_embeddings", "embeddings.token_type_embeddings"),
        embed_norm="embeddings.LayerNorm",
        embed_project="embeddings_project",
        head_in=("classifier", "classifier.out_proj", "qa_outputs", "cls.predictions.decoder", "cls.seq_relationship",
                 "lm_head.decoder", "discriminator_predictions.dense_prediction", "generator_predictions.dense"),
        head_inout=("pooler.dense", "classifier.dense", "cls.predictions.transform.dense", "lm_head.dense",
                    "discriminator_predictions.dense"),
        head_norms=("cls.predictions.transform.LayerNorm", "lm_head.layer_norm"),
    ),
    Family(
        name="distilbert",
        model_types=("distilbert",),
        layers="transformer.layer",
        q="attention.q_lin",
        k="attention.k_lin",
        v="attention.v_lin",
        o="attention.out_lin",
        ffn_up="ffn.lin1",
        ffn_down="ffn.lin2",
        attn_norm="sa_layer_norm",
        ffn_norm="output_layer_norm",
        num_heads_attr="n_heads",
        attn="attention",
        ffn_config_attr="hidden_dim",
        embed_extra=("embeddings.position_embeddings",),
        embed_norm="embeddings.LayerNorm",
        head_in=("classifier", "qa_outputs", "vocab_projector"),
        head_inout=("pre_classifier", "vocab_transform"),
        head_norms=("vocab_layer_norm",),
    ),
    Family(
        name="gpt2",
        model_types=("gpt2",),
        layers="h",
        q="attn.c_attn",
        k="attn.c_attn",
        v="attn.c_attn",
        o="attn.c_proj",
        ffn_up="mlp.c_fc",
        ffn_down="mlp.c_proj",
        qkv_fused=True,
        attn_norm="ln_1",
        ffn_norm="ln_2",
        embeddings="wte",
        num_heads_attr="n_head",
        attn="attn",
        head_dim_attr="head_dim",
        ffn_config_attr="n_inner",
        embed_extra=("wpe",),
        final_norm="ln_f",
        head_in=("lm_head", "score", "classifier", "qa_outputs", "multiple_choice_head.summary"),
    ),
    Family(
        name="llama",
        model_types=("llama", "mistral", "qwen2", "qwen3", "smollm3"),
        layers="layers",
        q="self_attn.q_proj",
        k="self_attn.k_proj",
        v="self_attn.v_proj",
        o="self_attn.o_proj",
        ffn_up="mlp.up_proj",
        ffn_gate="mlp.gate_proj",
        ffn_down="mlp.down_proj",
        attn_norm="input_layernorm",
        ffn_norm="post_attention_layernorm",
        embeddings="embed_tokens",
        num_kv_heads_attr="num_key_value_heads",
        attn="self_attn",
        head_dim_attr="head_dim",
        final_norm="norm",
        head_in=("lm_head", "score", "qa_outputs"),
    ),
    # --- encoders with their own attention or FFN layout (issue 22) ---
    Family(
        name="deberta-v2",  # relative-position (disentangled) attention: its position projections follow q
        model_types=("deberta-v2",),
        layers="encoder.layer",
        q="attention.self.query_proj",
        k="attention.self.key_proj",
        v="attention.self.value_proj",
        o="attention.output.dense",
        ffn_up="intermediate.dense",
        ffn_down="output.dense",
        attn_norm="attention.output.LayerNorm",
        ffn_norm="output.LayerNorm",
        embed_extra=("embeddings.position_embeddings", "embeddings.token_type_embeddings", "encoder.rel_embeddings"),
        embed_norm="embeddings.LayerNorm",
        head_in=("classifier", "qa_outputs"),
        head_inout=("pooler.dense",),
        head_extra=("attention.self.pos_key_proj", "attention.self.pos_query_proj"),
        stream_norms=("encoder.LayerNorm",),
        hidden_config_extra=("pooler_hidden_size",),
    ),
    Family(
        name="modernbert",  # fused [q | k | v], gated MLP with [up | gate] fused, pre-LN, no biases
        model_types=("modernbert",),
        layers="layers",
        q="attn.Wqkv",
        k="attn.Wqkv",
        v="attn.Wqkv",
        o="attn.Wo",
        ffn_up="mlp.Wi",
        ffn_down="mlp.Wo",
        qkv_fused=True,
        ffn_fused=True,
        attn_norm="attn_norm",
        ffn_norm="mlp_norm",
        embeddings="embeddings.tok_embeddings",
        attn="attn",
        head_dim_attr="head_dim",
        embed_norm="embeddings.norm",
        final_norm="final_norm",
        head_in=("classifier", "decoder"),
        head_inout=("head.dense",),
        head_norms=("head.norm",),
    ),
    Family(
        name="albert",  # one layer group reused by every pass: pruning it prunes every use
        model_types=("albert",),
        layers="encoder.albert_layer_groups.0.albert_layers",
        q="attention.query",
        k="attention.key",
        v="attention.value",
        o="attention.dense",
        ffn_up="ffn",
        ffn_down="ffn_output",
        attn_norm="attention.LayerNorm",
        ffn_norm="full_layer_layer_norm",
        embed_extra=("embeddings.position_embeddings", "embeddings.token_type_embeddings"),
        embed_norm="embeddings.LayerNorm",
        embed_project="encoder.embedding_hidden_mapping_in",
        attn="attention",
        num_layers_attr="inner_group_num",
        shared_layers="num_hidden_groups",
        head_in=("classifier", "qa_outputs", "sop_classifier.classifier", "predictions.dense"),
        head_inout=("pooler",),
    ),
    Family(
        name="mpnet",  # one relative-position bias table (per head) shared by every layer
        model_types=("mpnet",),
        layers="encoder.layer",
        q="attention.attn.q",
        k="attention.attn.k",
        v="attention.attn.v",
        o="attention.attn.o",
        ffn_up="intermediate.dense",
        ffn_down="output.dense",
        attn_norm="attention.LayerNorm",
        ffn_norm="output.LayerNorm",
        embed_extra=("embeddings.position_embeddings",),
        embed_norm="embeddings.LayerNorm",
        attn="attention.attn",
        head_bias="encoder.relative_attention_bias",  # (buckets, heads): kept whole, each layer selects its heads
        head_bias_arg="position_bias",
        head_in=("classifier.out_proj", "qa_outputs", "lm_head.decoder"),
        head_inout=("classifier.dense", "lm_head.dense"),
        head_norms=("lm_head.layer_norm",),
    ),
)

# --- decoder families beyond LLaMA's layout (issue 22) ---
# Gemma, Gemma-2, Gemma-3: LLaMA's layout (Gemma-2/3 add norms around the attention and FFN outputs)
FAMILIES += (replace(next(f for f in FAMILIES if f.name == "llama"), name="gemma",
                     model_types=("gemma", "gemma2", "gemma3_text"),
                     no_hidden="Gemma scales the embeddings by sqrt(hidden_size) and Gemma-2/3 add "
                               "pre/post-FFN norms"),)


# Decoder families whose layout no entry can describe yet: what structured pruning would need first.
UNSUPPORTED: dict[str, str] = {
    "phi3": "cutting the fused qkv_proj and gate_up_proj row blocks",
    "gpt_neox": "cutting the fused query_key_value, interleaved per head",
    "falcon": "cutting the fused query_key_value (multi-query / grouped layouts)",
    "opt": "an entry for fc1/fc2, the learned positions and project_in/out",
    "olmo2": "cutting the q/k norms that span the full width together with the heads",
}


def family_for(model: nn.Module) -> Family:
    """The table entry for a Hugging Face model; a clear error names what is missing."""
    return family_for_config(getattr(model, "config", None))


def find_family(config: object) -> Family | None:
    """The table entry for a config, or None: unstructured and one-shot pruning then discover the blocks."""
    model_type = getattr(config, "model_type", None)
    return next((fam for fam in FAMILIES if model_type in fam.model_types), None)


def family_for_config(config: object) -> Family:
    """The table entry for a config (structured surgery and its loaders need it); a clear error without one."""
    fam = find_family(config)
    if fam is not None:
        return fam
    model_type = getattr(config, "model_type", None)
    if model_type in UNSUPPORTED:
        raise PrunekitError(f"structured pruning of {model_type} models is not supported yet: it needs "
                            f"{UNSUPPORTED[model_type]}; unstructured and one-shot pruning work")
    known = ", ".join(t for f in FAMILIES for t in f.model_types)
    raise PrunekitError(
        f"structured pruning (heads, FFN neurons, layers, hidden width) needs an entry for model_type "
        f"{getattr(config, 'model_type', None)!r} in prunekit/arch/families.py, saying where q/k/v/o, the FFN "
        f"and the norms live (known: {known}); unstructured and one-shot pruning work without one"
    )


def _base(model: nn.Module) -> tuple[nn.Module, str]:
    base = getattr(model, "base_model", model)
    prefix = "" if base is model else getattr(model, "base_model_prefix", "")
    return base, (prefix + ".") if prefix else ""


_SELECTED = "_prunekit_stack"  # the stack block-by-block code works on while :func:`selected_stack` is active


@contextmanager
def selected_stack(model: nn.Module, name: str) -> Iterator[None]:
    """Within the block, :func:`transformer_layers` and :func:`layer_stacks` see only stack ``name``: one-shot
    calibration walks one stack at a time (an encoder–decoder's encoder, then its decoder)."""
    stacks = dict(layer_stacks(model))
    if name not in stacks:
        raise PrunekitError(f"no block stack {name!r} in this model (stacks: {', '.join(stacks)})")
    object.__setattr__(model, _SELECTED, (name, stacks[name]))  # a plain attribute, not a submodule
    try:
        yield
    finally:
        object.__delattr__(model, _SELECTED)


def transformer_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """Qualified name and module list of the model's transformer blocks: the table's, else the longest
    stack found by :func:`prunekit.arch.discover.discovered_layers` (or the :func:`selected_stack`)."""
    if _SELECTED in vars(model):
        return vars(model)[_SELECTED]
    fam = find_family(getattr(model, "config", None))
    if fam is None:
        return discovered_layers(model)
    base, prefix = _base(model)
    try:
        layers = base.get_submodule(fam.layers)
    except AttributeError as err:
        raise PrunekitError(f"{fam.name} entry: the model has no '{fam.layers}' (layers) module") from err
    return prefix + fam.layers, layers


def layer_stacks(model: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    """Every stack of blocks unstructured pruning covers: the table's one, else all discovered ones
    (an encoder–decoder's encoder and decoder)."""
    if _SELECTED in vars(model) or find_family(getattr(model, "config", None)) is not None:
        return [transformer_layers(model)]
    stacks = block_stacks(model)
    return stacks or [discovered_layers(model)]  # the latter raises, naming what was not found


def linear_groups(model: nn.Module, block: nn.Module) -> list[list[str]]:
    """The block's Linears in the order data flows through them, grouped by shared input
    (q/k/v, then o, then gate/up, then down, then any others), from the table; without an entry, as
    :func:`prunekit.arch.discover.discovered_groups` finds them."""
    config = getattr(model, "config", None)
    fam = find_family(config)
    if fam is None:
        return discovered_groups(block, config)
    order = [[fam.q, fam.k, fam.v], [fam.o], [fam.ffn_gate, fam.ffn_up], [fam.ffn_down]]
    groups = []
    for group in order:
        names = list(dict.fromkeys(n for n in group if n))
        for n in names:
            try:
                block.get_submodule(n)
            except AttributeError as err:
                raise PrunekitError(f"{fam.name} entry: a block has no '{n}' module") from err
        groups.append(names)
    extra = sorted(set(block_linears(block, config)) - {n for g in groups for n in g})
    if extra:
        groups.append(extra)
    return groups


def attention_linears(model: nn.Module, block: nn.Module) -> set[str]:
    """The block's attention Linears (the rest is the MLP), for per-part sparsity."""
    config = getattr(model, "config", None)
    if find_family(config) is None:
        return {n for n in block_linears(block, config) if in_attention(n)}
    return {n for g in linear_groups(model, block)[:2] for n in g}


def prunable_modules(
    model: nn.Module, include: str | None = None, exclude: str | None = None
) -> dict[str, nn.Module]:
    """Linear layers whose weights prunekit may prune, by qualified name.

    Default: every Linear inside the transformer blocks (not embeddings, not the classifier/LM head,
    not mixture-of-experts routers), of every stack (:func:`layer_stacks`).
    ``include``/``exclude`` are regular expressions on the qualified module name and replace/filter
    the default, so unknown architectures still work when the user says what to prune.
    """
    if include is not None:
        try:
            pattern = re.compile(include)
        except re.error as err:
            raise PrunekitError(f"--prunable {include!r} is not a valid regular expression: {err}") from err
        chosen = {n: m for n, m in model.named_modules() if is_linear(m) and pattern.search(n)}
    else:
        config = getattr(model, "config", None)
        chosen = {f"{prefix}.{i}.{n}": block.get_submodule(n) for prefix, layers in layer_stacks(model)
                  for i, block in enumerate(layers) for n in block_linears(block, config)}
    if exclude is not None:
        try:
            drop = re.compile(exclude)
        except re.error as err:
            raise PrunekitError(f"--exclude {exclude!r} is not a valid regular expression: {err}") from err
        chosen = {n: m for n, m in chosen.items() if not drop.search(n)}
    if not chosen:
        what = f"matching {include!r}" if include else "inside the transformer layers"
        raise PrunekitError(f"no prunable Linear layers {what} in this model")
    return chosen


def prunable_weights(
    model: nn.Module, include: str | None = None, exclude: str | None = None
) -> dict[str, nn.Parameter]:
    """The weight tensors unstructured pruning masks, by name.

    Transformers: each of :func:`prunable_modules`' weights, keyed by module name. Recurrent and conv
    text models (:mod:`prunekit.arch.textnets`): every LSTM/GRU/RNN ``weight_ih``/``weight_hh`` and
    every Conv1d weight (not the embedding, not the classifier), keyed by parameter name; there
    ``include``/``exclude`` match parameter names and may pick any weight matrix.
    """
    if not is_text_model(model):
        return {name: mod.weight for name, mod in prunable_modules(model, include, exclude).items()}
    matrices = {n: p for n, p in model.named_parameters() if p.ndim >= 2}
    if include is not None:
        pattern = compile_regex(include, "--prunable")
        chosen = {n: p for n, p in matrices.items() if pattern.search(n)}
    else:
        layout = text_layout(model)
        owners = [n for n, _ in (*layout.recurrent, *layout.convs)]
        chosen = {n: p for n, p in matrices.items() if n.rpartition(".")[0] in owners}
    if exclude is not None:
        drop = compile_regex(exclude, "--exclude")
        chosen = {n: p for n, p in chosen.items() if not drop.search(n)}
    if not chosen:
        raise PrunekitError(f"no prunable weights {f'matching {include!r}' if include else ''} in this model")
    return chosen


def compile_regex(pattern: str, flag: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as err:
        raise PrunekitError(f"{flag} {pattern!r} is not a valid regular expression: {err}") from err
