"""Saving and reloading structurally pruned models: prunekit's loader always, vanilla transformers when it can."""

import copy
import dataclasses
import json

import _structured_zoo as zoo  # tests/ is on pytest's pythonpath
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, BertTokenizer

from prunekit.errors import PrunekitError
from prunekit.io.shapes import MANIFEST, load, save_pruned
from prunekit.prune import StructuredPlan, apply_plan, structured_masks

one_thread = zoo.one_thread  # autouse fixture
AUTO = {"gpt2": AutoModelForCausalLM, "llama": AutoModelForCausalLM}

UNEVEN = {
    "mha": StructuredPlan(heads={0: [1, 3], 1: [0], 2: [0, 1, 2]}, ffn={0: list(range(0, 48, 2)), 2: [1, 4, 9]},
                          layers=[0, 2], hidden=list(range(0, 32, 2))),
    "gqa": StructuredPlan(heads={0: [2, 3], 1: [0, 3], 2: [0, 1, 2, 3]}, ffn={0: list(range(0, 48, 2)), 2: [1, 4, 9]},
                          layers=[0, 1], hidden=list(range(0, 32, 2))),
}


def _uneven(family: str) -> StructuredPlan:
    plan = UNEVEN["gqa" if family == "llama" else "mha"]
    if family in zoo.SHARED_LAYERS:  # ALBERT keeps every (shared) layer
        plan = dataclasses.replace(plan, layers=list(range(zoo.LAYERS)))
    return plan


@pytest.mark.parametrize("family", zoo.FAMILIES)
def test_uneven_model_round_trips_through_load(family, tmp_path):
    model = zoo.build(family)
    plan = _uneven(family)
    pruned = apply_plan(copy.deepcopy(model), plan)
    manifest = save_pruned(pruned, None, tmp_path / "out")
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"model.safetensors", "config.json", MANIFEST} <= files and not any(f.endswith(".bin") for f in files)
    assert manifest["vanilla_from_pretrained"] is False
    assert json.loads((tmp_path / "out" / MANIFEST).read_text()) == manifest
    assert [layer["q_heads"] for layer in manifest["layers"]] == [len(plan.heads[i]) for i in plan.layers]

    loaded = load(tmp_path / "out")
    assert not loaded.training and type(loaded) is type(model)
    assert torch.equal(zoo.logits(loaded), zoo.logits(pruned))
    assert (zoo.logits(loaded) - zoo.logits(structured_masks(model, plan))).abs().max() <= 1e-4
    assert zoo.n_params(loaded) == zoo.n_params(pruned) < zoo.n_params(model)
    if family in ("gpt2", "llama"):
        assert loaded.lm_head.weight is loaded.get_input_embeddings().weight  # still tied after loading


SINGLE = {  # one granularity at a time, so a loader bug in one cannot hide behind another
    "heads": lambda fam: StructuredPlan(heads=UNEVEN["gqa" if fam == "llama" else "mha"].heads),
    "ffn": lambda fam: StructuredPlan(ffn={0: list(range(0, 48, 2)), 2: [1, 4, 9]}),
    "layers": lambda fam: StructuredPlan(layers=[0, 2]),
    "hidden": lambda fam: StructuredPlan(hidden=list(range(0, 32, 2))),
}


@pytest.mark.parametrize("granularity", list(SINGLE))
@pytest.mark.parametrize("family", zoo.FAMILIES)
def test_each_granularity_reloads_to_the_masked_outputs(family, granularity, tmp_path):
    model = zoo.build(family)
    plan = SINGLE[granularity](family)
    if family in zoo.SHARED_LAYERS and plan.layers is not None:
        pytest.skip("ALBERT refuses layer removal (tests/prune/test_prune_structured.py)")
    pruned = apply_plan(copy.deepcopy(model), plan)
    save_pruned(pruned, None, tmp_path / "out")
    loaded = load(tmp_path / "out")
    masked = zoo.logits(structured_masks(model, plan))
    assert (zoo.logits(loaded) - masked).abs().max() <= 1e-4
    assert (zoo.logits(model) - masked).abs().max() > 1e-2  # not vacuous: the plan changed the outputs
    assert zoo.n_params(loaded) == zoo.n_params(pruned) < zoo.n_params(model)


def test_electra_projection_survives_hidden_pruning_to_the_embedding_width(tmp_path):
    """hidden 32 -> 16 = embedding_size: ElectraModel builds no projection for equal widths; load() adds it."""
    pruned = apply_plan(zoo.build("electra"), StructuredPlan(hidden=list(range(16))))
    assert save_pruned(pruned, None, tmp_path / "out")["embed_project"] == [16, 16]
    assert torch.equal(zoo.logits(load(tmp_path / "out")), zoo.logits(pruned))


def test_loaded_gqa_model_generates_with_its_cache(tmp_path):
    pruned = apply_plan(zoo.build("llama"), _uneven("llama"))
    save_pruned(pruned, None, tmp_path / "out")
    loaded = load(tmp_path / "out")
    prompt = zoo.inputs()["input_ids"][:1]
    assert torch.equal(loaded.generate(prompt, max_new_tokens=4, do_sample=False),
                       pruned.generate(prompt, max_new_tokens=4, do_sample=False))


VANILLA = [
    # (family, plan, plain from_pretrained reproduces the model?)
    ("llama", StructuredPlan(heads={i: [2, 3] for i in range(3)}, ffn={i: list(range(20)) for i in range(3)},
                             layers=[0, 2], hidden=list(range(8, 32))), True),
    ("llama", StructuredPlan(heads={i: [0, 3] for i in range(3)}), True),  # one query head per group
    ("bert", StructuredPlan(ffn={i: list(range(1, 40)) for i in range(3)}, layers=[1, 2]), True),
    ("distilbert", StructuredPlan(layers=[0]), True),
    ("gpt2", StructuredPlan(ffn={i: list(range(16)) for i in range(3)}, layers=[0, 1]), True),
    # BERT's head size is hidden_size / num_attention_heads: fewer heads at the same width cannot be expressed ...
    ("bert", StructuredPlan(heads={i: [0, 1] for i in range(3)}), False),
    ("gpt2", StructuredPlan(heads={i: [0, 1] for i in range(3)}), False),
    ("distilbert", StructuredPlan(hidden=list(range(24))), False),  # 4 heads of 8 no longer make up 24
    # ... unless the hidden width shrinks in proportion (16 / 2 heads = the original 8 per head)
    ("roberta", StructuredPlan(heads={i: [0, 1] for i in range(3)}, hidden=list(range(16))), True),
    # the encoders of issue 22: uniform FFN widths and layer removal fit their configs (ModernBERT's
    # layer_types follow the kept layers; its fused [up | gate] width is intermediate_size twice) ...
    ("modernbert", StructuredPlan(ffn={i: list(range(20)) for i in range(3)}, layers=[0, 2]), True),  # both global
    ("deberta-v2", StructuredPlan(ffn={i: list(range(20)) for i in range(3)}, layers=[0, 2]), True),
    ("albert", StructuredPlan(ffn={0: list(range(20)), 1: list(range(20, 40)), 2: list(range(20))}), True),
    ("mpnet", StructuredPlan(ffn={i: list(range(20)) for i in range(3)}, layers=[1]), True),
    # ... head pruning does not: MPNet's layers pick their own heads of the one shared bias table
    ("mpnet", StructuredPlan(heads={i: [0, 1] for i in range(3)}, hidden=list(range(16))), False),
    ("modernbert", StructuredPlan(heads={i: [0, 1] for i in range(3)}), False),
    ("deberta-v2", StructuredPlan(hidden=list(range(16))), False),  # its o stays heads x head size wide
]


@pytest.mark.parametrize("family, plan, vanilla", VANILLA)
def test_plain_from_pretrained_when_the_config_can_say_it(family, plan, vanilla, tmp_path):
    pruned = apply_plan(zoo.build(family), plan)
    manifest = save_pruned(pruned, None, tmp_path / "out")
    assert manifest["vanilla_from_pretrained"] is vanilla
    assert torch.equal(zoo.logits(load(tmp_path / "out")), zoo.logits(pruned))  # prunekit's loader: always
    auto = AUTO.get(family, AutoModelForSequenceClassification)
    if vanilla:
        plain = auto.from_pretrained(tmp_path / "out").eval()
        assert (zoo.logits(plain) - zoo.logits(pruned)).abs().max() <= 1e-6
    else:
        with pytest.raises((RuntimeError, ValueError)):  # loud, never silently re-initialised
            auto.from_pretrained(tmp_path / "out")


def test_gpt2_layer_removal_with_per_layer_scaling_is_not_vanilla(tmp_path):
    """GPT-2 can scale attention by 1/(layer_idx+1): a renumbered block keeps its original scale."""
    model = zoo.build("gpt2", scale_attn_by_inverse_layer_idx=True)
    pruned = apply_plan(copy.deepcopy(model), StructuredPlan(layers=[1, 2]))
    assert (zoo.logits(pruned) - zoo.logits(structured_masks(model, StructuredPlan(layers=[1, 2])))).abs().max() <= 1e-4
    assert save_pruned(pruned, None, tmp_path / "out")["vanilla_from_pretrained"] is False
    assert torch.equal(zoo.logits(load(tmp_path / "out")), zoo.logits(pruned))


def test_tokenizer_is_saved_and_an_existing_folder_is_refused(tmp_path):
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good"])})
    pruned = apply_plan(zoo.build("bert"), StructuredPlan(layers=[0]))
    save_pruned(pruned, tok, tmp_path / "out")
    assert AutoTokenizer.from_pretrained(tmp_path / "out").convert_tokens_to_ids("good") == 5
    before = sorted(p.name for p in (tmp_path / "out").iterdir())
    with pytest.raises(PrunekitError, match="already exists"):
        save_pruned(pruned, tok, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == before
    save_pruned(pruned, tok, tmp_path / "out", force=True)


def test_load_refuses_pickles_and_mismatches(tmp_path):
    pruned = apply_plan(zoo.build("llama"), _uneven("llama"))
    save_pruned(pruned, None, tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())

    manifest["layers"][0]["ffn"] += 1
    (tmp_path / "out" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(PrunekitError, match="do not match"):
        load(tmp_path / "out")

    manifest["version"] = 99
    (tmp_path / "out" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(PrunekitError, match="unsupported format"):
        load(tmp_path / "out")

    (tmp_path / "out" / "model.safetensors").rename(tmp_path / "out" / "pytorch_model.bin")
    manifest["version"] = 1
    (tmp_path / "out" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(PrunekitError, match="no .safetensors"):
        load(tmp_path / "out")


def test_folders_without_a_manifest_load_as_usual(tiny_classifier):
    model = load(tiny_classifier)
    assert type(model).__name__ == "BertForSequenceClassification"
