"""The LM path end to end on a tiny LLaMA: evaluate → one-shot prune → save (packed or dense) → reload."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from _threads import one_thread  # noqa: F401 - autouse fixture, shared
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

import prunekit
from prunekit.cli import app
from prunekit.errors import PrunekitError
from prunekit.pipeline_lm import evaluate_lm, prune_lm
from prunekit.prune.oneshot import OneShotSettings
from prunekit.tasks.lm import evaluation_windows, load_lm_text

runner = CliRunner()


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def _plain_perplexity(folder: Path, corpus: Path, seq_len: int, n: int) -> float:
    """exp of the mean NLL the model's own loss gives on the evaluation windows (one window at a time)."""
    model = prunekit.load(folder).eval()
    windows = evaluation_windows(load_lm_text(AutoTokenizer.from_pretrained(folder), str(corpus)), seq_len, n=n)
    with torch.no_grad():
        losses = [float(model(input_ids=w[None], labels=w[None]).loss) for w in windows]
    return math.exp(sum(losses) / len(losses))


def _run(tiny_lm, tiny_text, out, **kw):
    kw.setdefault("settings", OneShotSettings(method="sparsegpt", sparsity=0.5))
    return prune_lm(str(tiny_lm), str(tiny_text), out, calib_samples=8, seq_len=32, eval_samples=4, **kw)


def test_prune_lm_writes_a_smaller_packed_model_that_reloads_identically(tiny_lm, tiny_text, tmp_path):
    before = _digest(tiny_lm)
    out = tmp_path / "pruned"
    report = _run(tiny_lm, tiny_text, out)
    assert _digest(tiny_lm) == before  # the input model is never touched
    assert (out / "model.packed.safetensors").exists() and not (out / "model.safetensors").exists()
    saved = json.loads((out / "report.json").read_text())
    for key in ("perplexity", "prune_seconds", "peak_memory", "layer_sparsity", "disk", "stages", "reload_check"):
        assert key in saved, key
    assert saved["reload_check"]["max_abs_logit_diff"] == 0.0
    assert saved["disk"]["weights_bytes"] < saved["disk"]["dense_bytes"]
    assert saved["stages"][1]["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert report["perplexity"]["pruned"] == saved["stages"][1]["metrics"]["perplexity"]
    assert (out / "report.md").exists() and (out / "layer_sparsity.png").exists()
    model = prunekit.load(out)
    again = evaluate_lm(str(out), str(tiny_text), seq_len=32, eval_samples=4)
    assert again["perplexity"] == pytest.approx(report["perplexity"]["pruned"], rel=1e-6)
    tied = model.get_input_embeddings().weight.data_ptr() == model.get_output_embeddings().weight.data_ptr()
    assert tied


def test_dense_save_loads_with_plain_transformers(tiny_lm, tiny_text, tmp_path):
    out = tmp_path / "dense"
    report = _run(tiny_lm, tiny_text, out, settings=OneShotSettings(method="wanda", pattern="2:4"), save="dense")
    model = AutoModelForCausalLM.from_pretrained(out)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and ".layers." in name:
            assert ((module.weight != 0).view(module.weight.shape[0], -1, 4).sum(2) <= 2).all()
    assert report["stages"][1]["name"] == "wanda 2:4"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"settings": OneShotSettings(sparsity=1.0)}, r"\[0, 1\)"),
        ({"settings": OneShotSettings(pattern="3:7", sparsity=0.0)}, "multiple of 7"),
        ({"seq_len": 10**6}, "shorter than one window"),
        ({"save": "zip"}, "--save"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(tiny_lm, tiny_text, tmp_path, kwargs, match):
    out = tmp_path / "out"
    args = {"calib_samples": 8, "seq_len": 32, "eval_samples": 4, **kwargs}
    settings = args.pop("settings", OneShotSettings())
    with pytest.raises(PrunekitError, match=match):
        prune_lm(str(tiny_lm), str(tiny_text), out, settings, **args)
    assert not out.exists()


def test_a_classifier_is_not_a_causal_lm(tiny_classifier, tiny_text, tmp_path):
    with pytest.raises(PrunekitError, match="not a causal language model"):
        prune_lm(str(tiny_classifier), str(tiny_text), tmp_path / "o", calib_samples=4, seq_len=16)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("cls", "what"), [("BertForTokenClassification", "token classification"),
                                         ("BertForMaskedLM", "masked LM"), ("BertModel", "no LM head")])
def test_task_lm_names_the_head_it_refuses(tiny_bert_with_head, tiny_text, tmp_path, cls, what):
    import transformers

    folder = tiny_bert_with_head(getattr(transformers, cls))
    with pytest.raises(PrunekitError, match=rf"is a {cls} \({what}\); --task lm needs a decoder LM"):
        prune_lm(str(folder), str(tiny_text), tmp_path / "o", calib_samples=4, seq_len=16)
    with pytest.raises(PrunekitError, match=rf"is a {cls} \({what}\)"):
        evaluate_lm(str(folder), str(tiny_text), seq_len=16)
    assert not (tmp_path / "o").exists()


def test_cli_prune_and_evaluate_lm(tiny_lm, tiny_text, tmp_path):
    out = tmp_path / "cli"
    result = runner.invoke(app, ["prune", "--task", "lm", "-m", str(tiny_lm), "-d", str(tiny_text), "--out", str(out),
                                 "--method", "wanda", "--sparsity", "0.6", "--calib-samples", "8", "--seq-len", "32",
                                 "--eval-samples", "4", "--layer-ratios", "uniform"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["evaluate", "--task", "lm", "-m", str(out), "-d", str(tiny_text), "--seq-len", "32",
                                 "--eval-samples", "4", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["perplexity"] == pytest.approx(_plain_perplexity(out, tiny_text, 32, 4), rel=1e-5)
    bad = runner.invoke(app, ["prune", "--task", "lm", "-m", str(tiny_lm), "-d", str(tiny_text), "--out",
                              str(tmp_path / "bad"), "--pattern", "2:4", "--sparsity", "0.7"])
    assert bad.exit_code == 2 and "fixes the sparsity" in bad.output
    assert not (tmp_path / "bad").exists()


def test_structured_lm_is_smaller_reloads_and_least_squares_helps(tiny_lm, tiny_text, tmp_path):
    from prunekit.pipeline_lm import StructuredLM

    kw = {"calib_samples": 16, "seq_len": 32, "eval_samples": 4}
    plain = prune_lm(str(tiny_lm), str(tiny_text), tmp_path / "plain", None,
                     structured=StructuredLM(heads=0.5, ffn=0.5, reconstruct=False, latency=False), **kw)
    fitted = prune_lm(str(tiny_lm), str(tiny_text), tmp_path / "ls", None,
                      structured=StructuredLM(heads=0.5, ffn=0.5, reconstruct=True, latency=False), **kw)
    assert fitted["plan"] == plain["plan"]  # same groups removed; only the refit differs
    assert fitted["stages"][1]["params_total"] < 0.8 * fitted["stages"][0]["params_total"]
    assert fitted["perplexity"]["pruned"] < plain["perplexity"]["pruned"]
    model = prunekit.load(tmp_path / "ls")
    assert model.model.layers[0].mlp.down_proj.in_features == 24
    assert fitted["reload_check"]["max_abs_logit_diff"] <= 1e-4
    dropped = prune_lm(str(tiny_lm), str(tiny_text), tmp_path / "layers", None,
                       structured=StructuredLM(layers=1, latency=False), **kw)
    assert len(dropped["plan"]["layers"]) == 1
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "layers").config.num_hidden_layers == 1


@pytest.mark.parametrize("structured, match", [
    ({"heads": 0.25, "gqa": "heads"}, "cannot be split evenly over its 2 key/value groups"),
    ({"layers": 2}, "every one of the 2 layers"),
])
def test_structured_lm_bad_input_writes_nothing(tiny_lm, tiny_text, tmp_path, structured, match):
    from prunekit.pipeline_lm import StructuredLM

    with pytest.raises(PrunekitError, match=match):
        prune_lm(str(tiny_lm), str(tiny_text), tmp_path / "o", None,
                 structured=StructuredLM(latency=False, **structured), calib_samples=8, seq_len=32, eval_samples=4)
    assert not (tmp_path / "o").exists()
