"""The evaluate → prune → recover → test loop on a tiny real BERT, end to end through the public API."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from _plain import assert_reproduces
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from prunekit.config import DataOptions, PruneSettings
from prunekit.errors import PrunekitError
from prunekit.pipeline import evaluate, inspect, prune

STAGE_KEYS = {"name", "metrics", "params_total", "params_nonzero", "size_bytes", "size_compressed_bytes",
              "latency_ms", "seconds"}
METRIC_KEYS = {"accuracy", "f1_macro", "precision", "recall", "loss"}


def _settings(**kw) -> PruneSettings:
    base = dict(sparsity=0.5, finetune_epochs=1, lr=1e-3, batch_size=16, latency=False)
    return PruneSettings(**(base | kw))


def _tree_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def test_baseline_is_trained(trained_tiny):
    clf, csv = trained_tiny
    assert evaluate(str(clf), DataOptions(str(csv)))["accuracy"] >= 0.9


def test_gradual_prune_report_and_reload(trained_tiny, tmp_path):
    clf, csv = trained_tiny
    before = _tree_hash(clf)
    out = tmp_path / "out"
    report = prune(str(clf), DataOptions(str(csv)), out, _settings(latency=True, steps=2))
    assert _tree_hash(clf) == before, "the input model must stay untouched"
    names = [s["name"] for s in report["stages"]]
    assert names == ["baseline", "step_1", "final"]
    for stage in report["stages"]:
        assert stage.keys() >= STAGE_KEYS and stage["metrics"].keys() >= METRIC_KEYS
        assert set(stage["latency_ms"]) == {"batch_1", "batch_32"}
    final = report["stages"][-1]
    assert final["sparsity"] == pytest.approx(0.5, abs=0.002)
    assert final["size_compressed_bytes"] < report["stages"][0]["size_compressed_bytes"]
    assert final["metrics"]["accuracy"] >= 0.85
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["stages"][-1]["metrics"] == final["metrics"] and on_disk["versions"]["torch"]
    assert (out / "report.md").read_text().count("final") >= 1
    assert (out / "layer_sparsity.png").stat().st_size > 1000
    # plain transformers reloads it and reproduces the measured test accuracy and loss
    assert report["reload_check"]["max_abs_logit_diff"] < 1e-5
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert model.config.id2label == {0: "negative", 1: "positive"}
    assert_reproduces(out, DataOptions(str(csv)), final["metrics"], model)
    w = load_file(str(out / "model.safetensors"))
    zeros = sum(int((w[f"{n}.weight"] == 0).sum()) for n in report["layer_sparsity"])
    total = sum(w[f"{n}.weight"].numel() for n in report["layer_sparsity"])
    assert zeros / total == pytest.approx(final["sparsity"])


@pytest.mark.parametrize(
    ("kw", "names"),
    [
        ({"schedule": "oneshot", "method": "magnitude", "scope": "local"}, ["baseline", "pruned", "final"]),
        ({"schedule": "oneshot", "method": "taylor", "calib_batches": 4}, ["baseline", "pruned", "final"]),
        ({"schedule": "iterative", "steps": 3, "method": "random"}, ["baseline", "step_1", "step_2", "final"]),
        ({"schedule": "gradual", "method": "movement", "sparsity": 0.7}, ["baseline", "final"]),
        ({"schedule": "gradual", "method": "taylor", "scope": "local"}, ["baseline", "final"]),
        ({"schedule": "oneshot", "method": "wanda", "calib_batches": 4}, ["baseline", "pruned", "final"]),
        ({"schedule": "gradual", "method": "wanda", "calib_batches": 2, "steps": 2}, ["baseline", "step_1", "final"]),
        ({"schedule": "oneshot", "method": "sparsegpt", "calib_batches": 4}, ["baseline", "pruned", "final"]),
        ({"schedule": "iterative", "steps": 2, "method": "sparsegpt", "calib_batches": 2, "sparsity": 0.7},
         ["baseline", "step_1", "final"]),
    ],
)
def test_methods_scopes_schedules_reach_target(trained_tiny, tmp_path, kw, names):
    clf, csv = trained_tiny
    s = _settings(**kw)
    report = prune(str(clf), DataOptions(str(csv)), tmp_path / "out", s)
    assert [st["name"] for st in report["stages"]] == names
    assert report["stages"][-1]["sparsity"] == pytest.approx(s.sparsity, abs=0.002)
    scope = report["settings"]["prune"]["scope"]
    if scope in ("local", "row"):
        assert all(v == pytest.approx(s.sparsity, abs=0.01) for v in report["layer_sparsity"].values())
    if s.method == "sparsegpt":
        assert scope == "local"  # SparseGPT gives each layer the target itself
        assert len(report["layer_sparsity"]) == 12  # every Linear of both blocks, as for the other methods
    if s.method == "wanda":
        assert scope == "row"  # the default for wanda: its scores only compare within an output row
        w = load_file(str(tmp_path / "out" / "model.safetensors"))
        kept = [int((w[f"{n}.weight"] != 0).sum(1).min()) for n in report["layer_sparsity"]]
        full = [w[f"{n}.weight"].shape[1] for n in report["layer_sparsity"]]
        assert all(k >= round((1 - s.sparsity) * f) - 1 for k, f in zip(kept, full, strict=True))


@pytest.mark.parametrize(("ramp_end", "at_target_by_half"), [(0.4, True), (1.0, False)])
def test_gradual_ramp_end_sets_when_the_target_is_reached(trained_tiny, tmp_path, ramp_end, at_target_by_half):
    """The checkpoint halfway through recovery is already at the target when the ramp ends at 40 %, and
    still below it when the ramp spans the whole run; both end at the target."""
    clf, csv = trained_tiny
    report = prune(str(clf), DataOptions(str(csv)), tmp_path / "out", _settings(steps=2, ramp_end=ramp_end))
    half, final = report["stages"][1], report["stages"][-1]
    assert half["name"] == "step_1" and final["sparsity"] == pytest.approx(0.5, abs=0.002)
    assert (half["sparsity"] == pytest.approx(0.5, abs=0.002)) is at_target_by_half
    assert report["settings"]["prune"]["ramp_end"] == ramp_end


def test_distill_hidden_adds_a_hidden_state_loss(trained_tiny, tmp_path):
    """Same seed, same masks schedule: only the hidden-state term differs, so the trained weights must too."""
    clf, csv = trained_tiny
    outs = {}
    for weight in (0.0, 1.0):
        prune(str(clf), DataOptions(str(csv)), tmp_path / f"h{weight}",
              _settings(schedule="oneshot", distill=True, distill_hidden=weight))
        outs[weight] = load_file(str(tmp_path / f"h{weight}" / "model.safetensors"))
    assert any(not torch.equal(outs[0.0][k], outs[1.0][k]) for k in outs[0.0])


def test_threshold_prunes_small_weights(trained_tiny, tmp_path):
    clf, csv = trained_tiny
    report = prune(str(clf), DataOptions(str(csv)), tmp_path / "out",
                   _settings(schedule="oneshot", threshold=0.02, finetune_epochs=0))
    w = load_file(str(tmp_path / "out" / "model.safetensors"))
    ref = load_file(str(clf / "model.safetensors"))
    for name in report["layer_sparsity"]:
        orig = ref[f"{name}.weight"]
        assert torch.equal(w[f"{name}.weight"] == 0, orig.abs() < 0.02)
    assert 0 < report["stages"][-1]["sparsity"] < 1


def test_max_drop_stops_and_keeps_last_good_model(trained_tiny, tmp_path):
    clf, csv = trained_tiny
    s = _settings(schedule="iterative", steps=3, sparsity=0.99, method="random", max_drop=0.0, finetune_epochs=0.3)
    report = prune(str(clf), DataOptions(str(csv)), tmp_path / "out", s)
    stopped = report["stopped"]
    assert stopped is not None and "max-drop" in stopped["reason"]
    final = report["stages"][-1]
    assert final["name"] == "final" and final["sparsity"] < 0.99 - 1e-3
    assert "stopped" in (tmp_path / "out" / "report.md").read_text().lower()
    baseline_val = report["stages"][0]["validation_metrics"]["accuracy"]
    assert final["validation_metrics"]["accuracy"] >= baseline_val - 1e-9


def test_same_seed_same_masks_and_metrics(trained_tiny, tmp_path):
    clf, csv = trained_tiny
    runs = [prune(str(clf), DataOptions(str(csv)), tmp_path / f"o{i}", _settings(method="taylor"), seed=3)
            for i in range(2)]
    assert runs[0]["stages"][-1]["metrics"] == runs[1]["stages"][-1]["metrics"]
    a, b = (load_file(str(tmp_path / f"o{i}" / "model.safetensors")) for i in range(2))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_inspect_counts_params_and_sparsity(trained_tiny, tmp_path):
    clf, csv = trained_tiny
    prune(str(clf), DataOptions(str(csv)), tmp_path / "out", _settings(sparsity=0.3, schedule="oneshot"))
    info = inspect(str(tmp_path / "out"))
    assert info["params_total"] == sum(v["params"] for v in info["modules"].values())
    assert "bert.encoder.layer.1" in info["modules"]
    enc = [v for k, v in info["layer_sparsity"].items() if "encoder" in k]
    assert np.mean(enc) == pytest.approx(0.3, abs=0.05)
    assert info["layer_sparsity"]["classifier"] == 0.0


# --- bad input: one clear error, nothing written, the input untouched ------------------------------


def _expect_error(match, model, data, out, **kw):
    existed = Path(out).exists()
    with pytest.raises(PrunekitError, match=match):
        prune(str(model), DataOptions(str(data), **kw.pop("data_kw", {})), out, _settings(**kw))
    assert existed or not Path(out).exists()
    assert not list(Path(out).parent.glob(f".{Path(out).name}.tmp-*"))


def test_bad_inputs(trained_tiny, tmp_path):
    clf, csv = trained_tiny
    before = _tree_hash(clf)
    out = tmp_path / "out"
    _expect_error("no such folder", tmp_path / "nope", csv, out)
    _expect_error("does not exist|no such", clf, tmp_path / "missing.csv", out)
    _expect_error(r"\[0, 1\)", clf, csv, out, sparsity=1.0)
    _expect_error(r"\[0, 1\)", clf, csv, out, sparsity=-0.2)
    _expect_error("column", clf, csv, out, data_kw={"label_column": "stars"})
    one = tmp_path / "one.csv"
    pd.DataFrame({"text": ["a b", "c d", "e f"] * 5, "label": ["positive"] * 15}).to_csv(one, index=False)
    _expect_error("class", clf, one, out)
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    _expect_error("empty|no rows", clf, empty, out)
    odd = tmp_path / "odd.csv"
    rows = pd.concat([pd.read_csv(csv), pd.DataFrame({"text": ["meh meh"] * 30, "label": ["neutral"] * 30})])
    rows.to_csv(odd, index=False)
    _expect_error("neutral", clf, odd, out)
    _expect_error("gradual", clf, csv, out, method="movement", schedule="oneshot")
    _expect_error("ramp_end", clf, csv, out, ramp_end=0.0)
    _expect_error("alpha", clf, csv, out, distill=True, distill_alpha=1.5)
    _expect_error("temperature", clf, csv, out, distill=True, temperature=0.0)
    _expect_error("add --distill", clf, csv, out, distill_hidden=1.0)
    _expect_error("hidden_weight", clf, csv, out, distill=True, distill_hidden=-1.0)
    _expect_error("Linear", clf, csv, out, method="wanda", prunable=r".*LayerNorm")
    _expect_error("sparsegpt .* use --schedule oneshot or iterative", clf, csv, out, method="sparsegpt")  # gradual
    _expect_error("--scope local", clf, csv, out, method="sparsegpt", schedule="oneshot", scope="global")
    _expect_error("threshold", clf, csv, out, method="sparsegpt", schedule="oneshot", threshold=0.1)
    _expect_error("inside the transformer blocks", clf, csv, out, method="sparsegpt", schedule="oneshot",
                  prunable="classifier")
    _expect_error("--damp dampens SparseGPT", clf, csv, out, method="wanda", schedule="oneshot", damp=0.1)
    _expect_error("--damp dampens SparseGPT", clf, csv, out, method="sparsegpt", heads=0.5, sparsity=None, damp=0.1)
    _expect_error(r"--damp must be in \(0, 10\)", clf, csv, out, method="sparsegpt", schedule="oneshot", damp=0.0)
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("precious")
    _expect_error("not empty", clf, csv, full)
    assert (full / "keep.txt").read_text() == "precious"
    assert _tree_hash(clf) == before


def test_unsupported_model_type_and_pickle_weights(tmp_path, tiny_csv):
    odd = tmp_path / "odd-model"
    odd.mkdir()
    (odd / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    with pytest.raises(PrunekitError, match="odd-model"):
        prune(str(odd), DataOptions(str(tiny_csv)), tmp_path / "o", _settings())
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    (pickled / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(PrunekitError, match="safetensors"):
        prune(str(pickled), DataOptions(str(tiny_csv)), tmp_path / "o", _settings())


# --- a model's head must fit the task and the data's classes (issue 19, item 7) ---------------------------


def test_a_token_or_qa_model_is_refused_by_every_classifier_command(tiny_bert_with_head, tiny_csv, tmp_path):
    """Before: each became a sequence classifier with a fresh head ("no trained classification head")."""
    from transformers import BertForQuestionAnswering, BertForTokenClassification

    from prunekit.config import TrainOptions
    from prunekit.pipeline import finetune
    from prunekit.search.api import SearchData, sensitivity

    token, qa = tiny_bert_with_head(BertForTokenClassification), tiny_bert_with_head(BertForQuestionAnswering)
    before = _tree_hash(token)
    _expect_error(r"is a BertForTokenClassification \(token classification\); prunekit supports sequence "
                  r"classification and causal LMs \(--task lm\) for now", token, tiny_csv, tmp_path / "o")
    _expect_error(r"is a BertForQuestionAnswering \(question answering\)", qa, tiny_csv, tmp_path / "o")
    with pytest.raises(PrunekitError, match="token classification"):
        finetune(str(token), DataOptions(str(tiny_csv)), tmp_path / "f", TrainOptions(epochs=0.1))
    with pytest.raises(PrunekitError, match="question answering"):
        evaluate(str(qa), DataOptions(str(tiny_csv)))
    with pytest.raises(PrunekitError, match="token classification"):
        sensitivity(str(token), DataOptions(str(tiny_csv)), tmp_path / "s", opts=SearchData(calib_batches=1))
    assert not any((tmp_path / d).exists() for d in ("o", "f", "s"))
    assert _tree_hash(token) == before


def _three_labels(tiny_bert_with_head, named: bool) -> Path:
    from transformers import BertForSequenceClassification

    if not named:
        return tiny_bert_with_head(BertForSequenceClassification, "three", num_labels=3)
    names = ["negative", "neutral", "positive"]
    return tiny_bert_with_head(BertForSequenceClassification, "three-named", id2label=dict(enumerate(names)),
                               label2id={n: i for i, n in enumerate(names)})


def test_a_three_label_model_on_two_class_data_is_refused(tiny_bert_with_head, tiny_csv, tmp_path):
    """Before: accepted without a word (the data's two classes are a subset of the model's three)."""
    named = _three_labels(tiny_bert_with_head, named=True)
    _expect_error(r"'\S+three-named' has 3 labels \(negative, neutral, positive\) but the data \S+tiny.csv has 2 "
                  r"classes \(negative, positive\); give data with the model's classes", named, tiny_csv,
                  tmp_path / "o")
    ints = tmp_path / "ints.csv"
    pd.read_csv(tiny_csv).assign(label=lambda d: (d.label == "positive").astype(int)).to_csv(ints, index=False)
    generic = _three_labels(tiny_bert_with_head, named=False)
    with pytest.raises(PrunekitError, match=r"has 3 labels but the data \S+ has 2 classes;"):
        evaluate(str(generic), DataOptions(str(ints)))


def test_a_two_label_model_on_three_class_data_is_refused(tiny_classifier, tiny_csv, tmp_path):
    odd = tmp_path / "odd.csv"
    rows = pd.read_csv(tiny_csv)
    pd.concat([rows, pd.DataFrame({"text": ["meh meh"] * 30, "label": ["neutral"] * 30})]).to_csv(odd, index=False)
    with pytest.raises(PrunekitError, match=r"has 2 labels \(negative, positive\) but the data \S+ has 3 classes "
                                            r"\(negative, neutral, positive\)"):
        evaluate(str(tiny_classifier), DataOptions(str(odd)))


def test_label_names_must_match_but_integer_labels_are_the_models_ids(tiny_classifier, tiny_csv, tmp_path):
    """Decided: string labels that differ from the model's names are refused; integer labels 0…n-1 are its
    label ids (the transformers convention), read so, and the mapping is logged and kept in the report's notes."""
    from prunekit.pipeline import open_workbench

    other = tmp_path / "other.csv"
    pd.read_csv(tiny_csv).replace({"label": {"negative": "bad", "positive": "good"}}).to_csv(other, index=False)
    with pytest.raises(PrunekitError, match=r"labels \['bad', 'good'\] are not in the model's label set"):
        evaluate(str(tiny_classifier), DataOptions(str(other)))
    ints = tmp_path / "ints.csv"
    frame = pd.read_csv(tiny_csv).assign(label=lambda d: (d.label == "positive").astype(int))
    frame.to_csv(ints, index=False)
    wb = open_workbench(str(tiny_classifier), DataOptions(str(ints)))
    by_name = open_workbench(str(tiny_classifier), DataOptions(str(tiny_csv)))
    assert wb.data.label_names == ["negative", "positive"]
    assert wb.test.labels == by_name.test.labels and wb.train.labels == by_name.train.labels
    assert wb.notes == ["labels: the data's 0…1 read as the model's label ids (0 = negative, 1 = positive)"]


# --- SparseGPT: one-shot solver with weight updates, masks kept through recovery ----------------------


def test_sparsegpt_zeros_survive_recovery_and_the_model_reloads(trained_tiny, tmp_path):
    """Same seed and calibration: the run without recovery shows the zero pattern SparseGPT chose; after
    recovery exactly those weights are zero, the others trained on, and the saved model reproduces itself."""
    clf, csv = trained_tiny
    runs = {}
    for epochs in (0, 1):
        report = prune(str(clf), DataOptions(str(csv)), tmp_path / f"e{epochs}",
                       _settings(method="sparsegpt", schedule="oneshot", calib_batches=2, finetune_epochs=epochs))
        runs[epochs] = (report, load_file(str(tmp_path / f"e{epochs}" / "model.safetensors")))
    report, after = runs[1]
    before = runs[0][1]
    assert [st["name"] for st in report["stages"]] == ["baseline", "pruned", "final"]
    for name in report["layer_sparsity"]:
        w0, w1 = before[f"{name}.weight"], after[f"{name}.weight"]
        assert float((w0 == 0).float().mean()) == pytest.approx(0.5, abs=0.01), name
        assert torch.equal(w1 == 0, w0 == 0), name  # pruned stay pruned, none of the kept is zeroed
        assert not torch.equal(w1, w0), name  # recovery did train the kept weights
    assert report["stages"][1]["sparsity"] == pytest.approx(report["stages"][-1]["sparsity"])
    assert report["reload_check"]["max_abs_logit_diff"] < 1e-5
    assert_reproduces(tmp_path / "e1", DataOptions(str(csv)), report["stages"][-1]["metrics"])
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "e1").eval()
    name = next(iter(report["layer_sparsity"]))
    assert torch.equal(model.get_submodule(name).weight.detach() == 0, after[f"{name}.weight"] == 0)


GPT2_LINEARS = [f"transformer.h.{i}.{n}" for i in range(2) for n in ("attn.c_attn", "attn.c_proj", "mlp.c_fc",
                                                                    "mlp.c_proj")]


def test_sparsegpt_on_a_gpt2_classifier(tiny_gpt2_classifier, tiny_csv, tmp_path):
    """GPT-2's Linears are Conv1D (weight stored as (in, out)) and its tokenizer frames no text with
    [CLS]/[SEP]: every block's Linears reach the target, recovery keeps exactly SparseGPT's zeros, and the
    saved folder reloads to the same outputs."""
    data = DataOptions(str(tiny_csv))
    runs = {}
    for epochs in (0, 1):
        report = prune(str(tiny_gpt2_classifier), data, tmp_path / f"e{epochs}",
                       _settings(method="sparsegpt", schedule="oneshot", calib_batches=2, finetune_epochs=epochs))
        runs[epochs] = (report, load_file(str(tmp_path / f"e{epochs}" / "model.safetensors")))
    report, after = runs[1]
    before = runs[0][1]
    assert sorted(report["layer_sparsity"]) == GPT2_LINEARS
    for name in report["layer_sparsity"]:
        w0, w1 = before[f"{name}.weight"], after[f"{name}.weight"]
        assert float((w0 == 0).float().mean()) == pytest.approx(0.5, abs=0.01), name
        assert torch.equal(w1 == 0, w0 == 0), name  # pruned stay pruned, none of the kept is zeroed
        assert not torch.equal(w1, w0), name  # recovery did train the kept weights
    assert report["reload_check"]["max_abs_logit_diff"] < 1e-5
    assert_reproduces(tmp_path / "e1", data, report["stages"][-1]["metrics"])
    assert evaluate(str(tmp_path / "e1"), data) == pytest.approx(report["stages"][-1]["metrics"], abs=1e-6)
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "e1")
    assert type(model.get_submodule(GPT2_LINEARS[0])).__name__ == "Conv1D"


def test_sparsegpt_iterative_on_a_gpt2_classifier_keeps_earlier_zeros(tiny_gpt2_classifier, tiny_csv, tmp_path):
    """Step 1 of two (to 0.25) is the one-shot 0.25 run; its zeros, passed back as Conv1D-layout masks,
    stay zero through step 2 (to 0.5), whose weight update would otherwise revive some in mlp.c_proj (two
    column blocks: fails if the pipeline drops the earlier masks)."""
    data = DataOptions(str(tiny_csv))
    kw = dict(method="sparsegpt", calib_batches=2, finetune_epochs=0)
    prune(str(tiny_gpt2_classifier), data, tmp_path / "one", _settings(schedule="oneshot", sparsity=0.25, **kw))
    report = prune(str(tiny_gpt2_classifier), data, tmp_path / "two", _settings(schedule="iterative", steps=2, **kw))
    first, final = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("one", "two"))
    assert sorted(report["layer_sparsity"]) == GPT2_LINEARS
    for name in GPT2_LINEARS:
        w1, w2 = first[f"{name}.weight"], final[f"{name}.weight"]
        assert float((w1 == 0).float().mean()) == pytest.approx(0.25, abs=0.01), name
        assert float((w2 == 0).float().mean()) == pytest.approx(0.5, abs=0.01), name
        assert bool((w2[w1 == 0] == 0).all()), name


def test_sparsegpt_calibrates_sentence_pairs_with_their_token_types(trained_tiny, tmp_path):
    """On a sentence-pair task the packed windows reach the model with the second texts' token type 1,
    so the Hessians see the embeddings the model sees in training (not every token as a first text)."""
    from prunekit.arch import prunable_weights
    from prunekit.pipeline import open_workbench, solve
    from prunekit.prune import MaskSet

    clf, csv = trained_tiny
    df = pd.read_csv(csv)
    pairs = tmp_path / "pairs.csv"
    pd.DataFrame({"a": df.text, "b": df.text[::-1].to_numpy(), "label": df.label}).to_csv(pairs, index=False)
    wb = open_workbench(str(clf), DataOptions(str(pairs), text_columns=("a", "b")))
    seen: list[torch.Tensor] = []
    hook = wb.model.bert.embeddings.register_forward_pre_hook(
        lambda _m, _a, kw: seen.append(kw.get("token_type_ids")), with_kwargs=True)
    params = prunable_weights(wb.model)
    s = _settings(method="sparsegpt", schedule="oneshot", calib_batches=2).validate()
    solve(wb, MaskSet(params), s, 0.5, seed=0)
    hook.remove()
    assert seen and all(t is not None for t in seen)
    types = torch.cat(seen)
    assert 0.2 < float(types.float().mean()) < 0.8  # both texts of each pair, in about equal parts


def test_sparsegpt_damp_reaches_the_solver(trained_tiny):
    """--damp for classifiers: unset is the one-shot engine's default; more dampening, other weights."""
    from prunekit.arch import prunable_weights
    from prunekit.pipeline import open_workbench, solve
    from prunekit.prune import MaskSet
    from prunekit.prune.oneshot import OneShotSettings

    clf, csv = trained_tiny
    wb = open_workbench(str(clf), DataOptions(str(csv)))
    dense = {k: v.clone() for k, v in wb.model.state_dict().items()}
    params = {n: p for n, p in prunable_weights(wb.model).items() if ".layer.0." in n}
    pruned = {}
    for damp in (None, OneShotSettings().damp, 1.0):
        wb.model.load_state_dict(dense)
        s = _settings(method="sparsegpt", schedule="oneshot", calib_batches=2, damp=damp).validate()
        solve(wb, MaskSet(params), s, 0.5, seed=0)
        pruned[damp] = {n: p.detach().clone() for n, p in params.items()}
    default, same, damped = pruned.values()
    assert all(torch.equal(default[n], same[n]) for n in params)
    assert not any(torch.equal(default[n], damped[n]) for n in params)


def test_sparsegpt_applies_a_per_block_plan(trained_tiny, tmp_path):
    """--plan with sparsegpt: each block's Linears reach that block's sparsity from the plan."""
    from prunekit.search.plan import PLAN_VERSION

    clf, csv = trained_tiny
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({"prunekit_plan": PLAN_VERSION, "granularity": "unstructured",
                                    "block_sparsity": [0.3, 0.7]}))
    report = prune(str(clf), DataOptions(str(csv)), tmp_path / "out",
                   _settings(method="sparsegpt", sparsity=None, plan=str(plan), calib_batches=2, finetune_epochs=0))
    assert report["settings"]["prune"]["schedule"] == "oneshot" and len(report["layer_sparsity"]) == 12
    for name, achieved in report["layer_sparsity"].items():
        block = int(name.split(".layer.")[1].split(".")[0])
        assert achieved == pytest.approx([0.3, 0.7][block], abs=0.01), name


def test_sparsegpt_update_reconstructs_blocks_better_than_masking(trained_tiny):
    """On the calibration windows, the first block's output after the classifier path's SparseGPT step is
    closer to the dense block's than with the same mask and no weight update, and than layer-wise
    magnitude pruning at the same sparsity."""
    from prunekit.arch import prunable_weights, transformer_layers
    from prunekit.config import DataOptions as Data
    from prunekit.pipeline import open_workbench, solve
    from prunekit.prune import MaskSet, compute_masks
    from prunekit.tasks.classification import packed_windows

    clf, csv = trained_tiny
    s = _settings(method="sparsegpt", schedule="oneshot", calib_batches=2).validate()
    wb = open_workbench(str(clf), Data(str(csv)))
    wb.model.eval()
    dense = {k: v.clone() for k, v in wb.model.state_dict().items()}
    windows = packed_windows(wb.train, wb.tokenizer, s.calib_batches, s.batch_size)
    _, layers = transformer_layers(wb.model)

    def block0_error() -> float:
        with torch.no_grad():
            out = wb.model(**windows, output_hidden_states=True).hidden_states[1]
        return float((out - reference).pow(2).sum())

    with torch.no_grad():
        reference = wb.model(**windows, output_hidden_states=True).hidden_states[1]
    params = {n: p for n, p in prunable_weights(wb.model).items() if ".layer.0." in n}
    solve(wb, MaskSet(params), s, 0.5, seed=0)
    keep = {n: p != 0 for n, p in params.items()}
    err_sparsegpt = block0_error()
    wb.model.load_state_dict(dense)  # the same mask on the dense weights: no update
    MaskSet(params).update(keep)
    err_mask_only = block0_error()
    wb.model.load_state_dict(dense)
    MaskSet(params).update(compute_masks({n: p.abs() for n, p in params.items()}, 0.5, scope="local"))
    err_magnitude = block0_error()
    assert all(float((~k).float().mean()) == pytest.approx(0.5, abs=0.01) for k in keep.values())
    assert err_sparsegpt < 0.8 * err_mask_only and err_sparsegpt < 0.8 * err_magnitude
