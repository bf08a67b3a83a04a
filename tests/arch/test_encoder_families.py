"""What DeBERTa-v2/v3, ModernBERT, ALBERT and MPNet do differently from BERT, beyond the zoo's equivalence and
reload tests (tests/prune/test_prune_structured.py, tests/io/test_io_shapes.py): the CLI end to end, ALBERT's
shared layer, DeBERTa-v3's shared position keys, MPNet's shared position bias across repeated head pruning."""

from __future__ import annotations

import copy
import json

import _structured_zoo as zoo  # tests/ is on pytest's pythonpath
import pytest
import torch
from typer.testing import CliRunner

import prunekit
from prunekit.cli import app
from prunekit.errors import PrunekitError
from prunekit.importance.groups import layer_scores
from prunekit.io.shapes import MANIFEST, save_pruned
from prunekit.prune import (
    GroupScores,
    StructuredPlan,
    apply_plan,
    plan_from_ratios,
    prune_heads,
    prune_layers,
    structured_masks,
)

one_thread = zoo.one_thread  # autouse fixture


def _close(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return bool((zoo.logits(a) - zoo.logits(b)).abs().max() <= 1e-4)


def _folder(model: torch.nn.Module, tokenizer_from, folder):
    """``model`` (built with ``num_labels=2``) as a negative/positive classifier folder with the tiny tokenizer."""
    from transformers import AutoTokenizer

    model.config.id2label, model.config.label2id = {0: "negative", 1: "positive"}, {"negative": 0, "positive": 1}
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_from).save_pretrained(folder)
    return folder


def _prune(folder, csv, out, *flags: str):
    return CliRunner().invoke(app, ["prune", "-m", str(folder), "-d", str(csv), "--out", str(out), *flags,
                                    "--finetune-epochs", "0", "--no-latency", "--max-train-samples", "32",
                                    "--max-length", "16"])


@pytest.mark.parametrize("family", zoo.ENCODERS)
def test_cli_prunes_heads_and_ffn_and_the_folder_reloads(family, tiny_classifier, tiny_csv, tmp_path):
    model = zoo.build(family, num_labels=2)
    folder = _folder(copy.deepcopy(model), tiny_classifier, tmp_path / family)
    out = tmp_path / "out"
    result = _prune(folder, tiny_csv, out, "--heads", "0.5", "--ffn", "0.5")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["reload_check"]["same_predictions"]
    manifest = json.loads((out / MANIFEST).read_text())
    assert [layer["q_heads"] for layer in manifest["layers"]] == [zoo.HEADS // 2] * zoo.LAYERS
    assert [layer["ffn"] for layer in manifest["layers"]] == [zoo.FFN // 2] * zoo.LAYERS
    loaded = prunekit.load(out)
    assert zoo.n_params(loaded) < zoo.n_params(model)


def _albert(**overrides) -> torch.nn.Module:
    """ALBERT as released: one layer (inner_group_num=1) run num_hidden_layers=3 times."""
    return zoo.build("albert", inner_group_num=1, **overrides)


def test_albert_pruning_the_shared_layer_prunes_every_pass_and_reloads(tmp_path):
    model = _albert()
    plan = StructuredPlan(heads={0: [1, 3]}, ffn={0: list(range(0, zoo.FFN, 3))}, hidden=list(range(0, 32, 2)))
    pruned = apply_plan(copy.deepcopy(model), plan)
    assert _close(pruned, structured_masks(model, plan))
    assert not _close(pruned, model)
    assert pruned.config.num_hidden_layers == 3 and pruned.config.inner_group_num == 1  # still three passes
    save_pruned(pruned, None, tmp_path / "out")
    assert torch.equal(zoo.logits(prunekit.load(tmp_path / "out")), zoo.logits(pruned))


def test_albert_refuses_layer_removal_in_one_line_before_any_work():
    model = _albert()
    want = "albert reuses its shared layers in all 3 passes, so no single layer can be removed"
    scores = GroupScores(layers=torch.ones(1))
    for attempt in (lambda: prune_layers(model, []), lambda: apply_plan(model, StructuredPlan(layers=[])),
                    lambda: plan_from_ratios(model, scores, heads=0, ffn=0, layers=0.5),
                    lambda: layer_scores(model, "bi", batches=[zoo.inputs()])):
        with pytest.raises(PrunekitError, match=want):
            attempt()
    assert torch.equal(zoo.logits(model), zoo.logits(_albert()))  # untouched


def test_cli_refuses_albert_layer_removal_in_one_line(tiny_classifier, tiny_csv, tmp_path):
    folder = _folder(_albert(num_labels=2), tiny_classifier, tmp_path / "albert")
    result = _prune(folder, tiny_csv, tmp_path / "out", "--layers", "1")
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "error: albert reuses its shared layers in all 3 passes" in result.output  # not "every one of 1 layers"
    assert not (tmp_path / "out").exists()


def test_albert_with_several_layer_groups_is_refused_structurally():
    with pytest.raises(PrunekitError, match="handles one shared layer group; this model has num_hidden_groups=3"):
        prune_heads(zoo.build("albert", inner_group_num=1, num_hidden_groups=3), 0, [0, 1])


def test_deberta_v3_shared_position_keys_prune_and_reload(tmp_path):
    """v3 shares key_proj/query_proj with the relative positions (no pos_key_proj / pos_query_proj)."""
    model = zoo.build("deberta-v2", share_att_key=True, pos_att_type=["p2c", "c2p"])
    assert not hasattr(model.deberta.encoder.layer[0].attention.self, "pos_key_proj")
    plan = StructuredPlan(heads={0: [1, 3], 1: [0], 2: [0, 1, 2]}, hidden=list(range(0, 32, 2)))
    pruned = apply_plan(copy.deepcopy(model), plan)
    assert _close(pruned, structured_masks(model, plan)) and not _close(pruned, model)
    save_pruned(pruned, None, tmp_path / "out")
    assert torch.equal(zoo.logits(prunekit.load(tmp_path / "out")), zoo.logits(pruned))


def test_mpnet_heads_pruned_twice_still_select_their_own_bias_heads(tmp_path):
    model = zoo.build("mpnet")
    twice = prune_heads(prune_heads(copy.deepcopy(model), 0, [1, 2, 3]), 0, [0, 2])  # original heads 1 and 3
    assert _close(twice, structured_masks(model, StructuredPlan(heads={0: [1, 3]})))
    manifest = save_pruned(twice, None, tmp_path / "out")
    assert manifest["layers"][0]["bias_heads"] == [1, 3] and "bias_heads" not in manifest["layers"][1]
    assert manifest["vanilla_from_pretrained"] is False
    assert torch.equal(zoo.logits(prunekit.load(tmp_path / "out")), zoo.logits(twice))


def test_modernbert_without_its_first_layer_keeps_the_norm_the_config_would_not_build(tmp_path):
    """A config builds block 0 without an attention norm; the former block 1 now first has one."""
    from transformers import AutoModelForSequenceClassification

    pruned = apply_plan(zoo.build("modernbert"), StructuredPlan(layers=[1, 2]))
    manifest = save_pruned(pruned, None, tmp_path / "out")
    assert manifest["vanilla_from_pretrained"] is False and "no_norm" not in manifest["layers"][0]
    assert torch.equal(zoo.logits(prunekit.load(tmp_path / "out")), zoo.logits(pruned))
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")  # drops that norm, only warns
    assert not _close(plain.eval(), pruned)
