"""Structured pruning through the public API: physically smaller, recovers, reloads, reports MACs."""

from __future__ import annotations

import json

import pytest
import torch
from _plain import assert_reproduces
from transformers import AutoModelForSequenceClassification

import prunekit
from prunekit.config import DataOptions, PruneSettings
from prunekit.errors import PrunekitError
from prunekit.pipeline import evaluate, prune


def _settings(**kw) -> PruneSettings:
    return PruneSettings(**({"finetune_epochs": 1, "lr": 1e-3, "batch_size": 16, "latency": False} | kw))


def test_heads_and_ffn_shrink_and_reload_with_prunekit_load(trained_tiny, tmp_path):
    clf, csv = trained_tiny
    out = tmp_path / "half"
    report = prune(str(clf), DataOptions(str(csv)), out, _settings(heads=0.5, ffn=0.5, importance="taylor"))
    base, pruned, final = report["stages"]
    assert [base["name"], pruned["name"], final["name"]] == ["baseline", "pruned", "final"]
    assert final["params_total"] < base["params_total"]
    assert final["macs_per_token"] < 0.75 * base["macs_per_token"]
    assert [layer["q_heads"] for layer in report["shapes"]["layers"]] == [1, 1]
    assert [layer["ffn"] for layer in report["shapes"]["layers"]] == [32, 32]
    # BERT derives head size from hidden/heads, so fewer heads at full width needs prunekit's loader
    assert report["reload_check"]["loader"] == "prunekit.load" and report["reload_check"]["max_abs_logit_diff"] == 0
    manifest = json.loads((out / "prunekit_shapes.json").read_text())
    assert manifest["vanilla_from_pretrained"] is False
    model = prunekit.load(out)
    assert sum(p.numel() for p in model.parameters()) == final["params_total"]
    assert_reproduces(out, DataOptions(str(csv)), final["metrics"], model)  # plain tokenizer, one text at a time
    assert evaluate(str(out), DataOptions(str(csv))) == pytest.approx(final["metrics"], abs=1e-6)
    assert final["metrics"]["accuracy"] >= 0.8


def test_layer_removal_is_ranked_and_loads_with_plain_transformers(trained_tiny, tmp_path):
    clf, csv = trained_tiny
    out = tmp_path / "one-layer"
    report = prune(str(clf), DataOptions(str(csv)), out, _settings(layers=1, finetune_epochs=0))
    assert report["shapes"]["num_layers"] == 1
    assert report["reload_check"]["loader"].startswith("transformers")
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_hidden_layers == 1
    assert_reproduces(out, DataOptions(str(csv)), report["stages"][-1]["metrics"], model)
    assert len(report["plans"][0]["layers"]) == 1


@pytest.mark.parametrize("how", [None, "bi"])
def test_layer_removal_with_distilled_recovery_reports_the_cut_before_recovery(trained_tiny, tmp_path, how):
    clf, csv = trained_tiny
    report = prune(str(clf), DataOptions(str(csv)), tmp_path / "o", _settings(layers=1, distill=True,
                                                                              layer_importance=how))
    assert [s["name"] for s in report["stages"]] == ["baseline", "pruned", "final"]
    assert report["shapes"]["num_layers"] == 1 and len(report["plans"][0]["layers"]) == 1


def test_global_iterative_gives_uneven_widths(trained_tiny, tmp_path):
    clf, csv = trained_tiny
    report = prune(str(clf), DataOptions(str(csv)), tmp_path / "o",
                   _settings(ffn=0.6, scope="global", steps=2, round_to=4, importance="l1"))
    assert [s["name"] for s in report["stages"]] == ["baseline", "pruned", "step_1", "final"]
    widths = [layer["ffn"] for layer in report["shapes"]["layers"]]
    assert all(w % 4 == 0 for w in widths)
    assert sum(widths) == pytest.approx(0.4 * 128, abs=8)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"heads": 1.0}, r"\[0, 1\)"),
        ({"layers": 2}, "every one of the 2 layers"),
        ({"heads": 0.5, "sparsity": 0.5}, "two runs"),
        ({"ffn": 0.5, "importance": "psychic"}, "unknown --importance"),
        ({"layers": 1, "layer_importance": "depth"}, "unknown --layer-importance"),
    ],
)
def test_structured_bad_input(trained_tiny, tmp_path, kw, match):
    clf, csv = trained_tiny
    with pytest.raises(PrunekitError, match=match):
        prune(str(clf), DataOptions(str(csv)), tmp_path / "o", _settings(**kw))
    assert not (tmp_path / "o").exists()


def test_structured_model_can_be_pruned_again(trained_tiny, tmp_path):
    clf, csv = trained_tiny
    first = tmp_path / "first"
    prune(str(clf), DataOptions(str(csv)), first, _settings(heads=0.5, finetune_epochs=0))
    report = prune(str(first), DataOptions(str(csv)), tmp_path / "second", _settings(sparsity=0.5,
                                                                                      schedule="oneshot"))
    assert report["stages"][-1]["sparsity"] == pytest.approx(0.5, abs=0.01)
    with torch.no_grad():
        assert prunekit.load(tmp_path / "second").bert.encoder.layer[0].attention.self.query.out_features == 16


def test_vocabulary_pruning_keeps_predictions_and_tokenizer(trained_tiny, tmp_path):
    clf, csv = trained_tiny
    corpus = tmp_path / "corpus.txt"
    import pandas as pd

    corpus.write_text("\n\n".join(pd.read_csv(csv).text))
    out = tmp_path / "vocab"
    report = prune(str(clf), DataOptions(str(csv)), out, _settings(vocab_corpus=str(corpus), finetune_epochs=0,
                                                                   distill=True))
    base, final = report["stages"][0], report["stages"][-1]
    assert final["params_total"] < base["params_total"]
    assert final["metrics"] == pytest.approx(base["metrics"], abs=1e-6)  # same text, same outputs
    assert any("vocabulary" in n for n in report["notes"])
    assert AutoModelForSequenceClassification.from_pretrained(out).config.vocab_size < 40
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(PrunekitError, match="empty"):
        prune(str(clf), DataOptions(str(csv)), tmp_path / "o", _settings(vocab_corpus=str(empty)))
    assert not (tmp_path / "o").exists()
