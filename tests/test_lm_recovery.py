"""LMs get the loop's recovery half: finetune --task lm, prune --task lm + --finetune-tokens (unstructured,
2:4, structured, distillation), the overlap refusal and one report schema."""

from __future__ import annotations

import json

import pytest
import torch
from _threads import one_thread  # noqa: F401 - autouse fixture, shared
from typer.testing import CliRunner

import prunekit
from prunekit.cli import app
from prunekit.errors import PrunekitError
from prunekit.pipeline_lm import LMRecovery, prune_lm
from prunekit.prune.oneshot import OneShotSettings

runner = CliRunner()
WINDOWS = {"calib_samples": 8, "seq_len": 32, "eval_samples": 4}


def _prune(tiny_lm, tiny_text, out, recovery=None, **kw):
    kw.setdefault("settings", OneShotSettings(method="magnitude", sparsity=0.5))
    return prune_lm(str(tiny_lm), str(tiny_text), out, recovery=recovery, **WINDOWS, **kw)


def test_recovery_beats_the_one_shot_prune_and_keeps_its_zeros(tiny_lm, tiny_text, tmp_path) -> None:
    alone = _prune(tiny_lm, tiny_text, tmp_path / "alone")
    rec = _prune(tiny_lm, tiny_text, tmp_path / "rec", LMRecovery(tokens=6000, lr=3e-3, batch_size=4, eval_every=5))
    assert rec["perplexity"]["pruned"] == alone["perplexity"]["pruned"]  # the same one-shot prune first
    assert rec["perplexity"]["final"] < 0.8 * alone["perplexity"]["final"]
    assert [s["name"] for s in rec["stages"]] == ["dense", "magnitude", "final"]
    assert rec["stages"][-1]["sparsity"] == pytest.approx(rec["stages"][1]["sparsity"])  # no pruned weight grew back
    r = rec["recovery"]
    assert r["tokens"] >= 6000 and r["steps"] > 5 and r["overlap"] == 0.0
    assert r["checkpoints"][0] == {"step": 0, "perplexity": rec["perplexity"]["pruned"], "tokens": 0}
    assert r["checkpoints"][-1]["perplexity"] == rec["perplexity"]["final"]
    assert [c["step"] for c in r["checkpoints"][1:-1]] == list(range(5, r["steps"], 5))
    assert r["note"] and "repeats" in r["note"]  # 6000 tokens > the training text: said, not refused


def test_two_four_stays_exact_through_recovery_and_reloads(tiny_lm, tiny_text, tmp_path) -> None:
    out = tmp_path / "24"
    report = _prune(tiny_lm, tiny_text, out, LMRecovery(epochs=2, lr=3e-3),
                    settings=OneShotSettings(method="wanda", pattern="2:4", sparsity=0.5))
    model = prunekit.load(out)
    for name, module in model.named_modules():
        if name.startswith("model.layers") and isinstance(module, torch.nn.Linear):
            groups = (module.weight != 0).reshape(-1, 4).sum(-1)
            assert (groups <= 2).all(), name
    assert report["reload_check"]["max_abs_logit_diff"] <= 1e-4
    saved = json.loads((out / "report.json").read_text())
    # one schema: the classifier's keys beside every key the LM report always had
    for key in ("task", "baseline", "final", "stages", "recovery", "dense" if False else "perplexity", "disk",
                "speedup", "layer_sparsity", "reload_check"):
        assert key in saved, key
    assert saved["task"] == "lm" and saved["baseline"]["perplexity"] == saved["perplexity"]["dense"]
    assert saved["stages"][0]["name"] == "dense"


def test_structured_prune_recovers_with_distillation(tiny_lm, tiny_text, tmp_path) -> None:
    from prunekit.pipeline_lm import StructuredLM

    report = _prune(tiny_lm, tiny_text, tmp_path / "s", LMRecovery(tokens=2000, lr=3e-3, distill=True, alpha=0.0),
                    structured=StructuredLM(ffn=0.5, latency=False))
    assert report["recovery"]["distill"] and report["recovery"]["steps"] > 0
    assert report["perplexity"]["final"] < report["perplexity"]["pruned"]
    assert report["stages"][-1]["params_total"] == report["stages"][1]["params_total"]


def test_recovery_text_that_overlaps_the_evaluation_text_is_refused(tiny_lm, tiny_text, tmp_path) -> None:
    with pytest.raises(PrunekitError, match=r"overlaps the evaluation text: 100\.0 %"):
        _prune(tiny_lm, tiny_text, tmp_path / "x", LMRecovery(tokens=100), calib_data=str(tiny_text))
    assert not (tmp_path / "x").exists()
    # without recovery the same calibration text is what it was before: allowed
    _prune(tiny_lm, tiny_text, tmp_path / "y", calib_data=str(tiny_text))


def test_finetune_task_lm_lowers_perplexity(tiny_lm, tiny_text, tmp_path) -> None:
    out = tmp_path / "ft"
    result = runner.invoke(app, ["finetune", "--task", "lm", "-m", str(tiny_lm), "-d", str(tiny_text), "--out",
                                 str(out), "--seq-len", "32", "--eval-samples", "4", "--finetune-tokens", "4000",
                                 "--lr", "3e-3", "--batch-size", "4", "--eval-every", "10", "--no-latency"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    checkpoints = report["training"]["checkpoints"]
    assert checkpoints[0]["step"] == 0 and checkpoints[-1]["step"] == report["training"]["steps"]
    assert checkpoints[-1]["perplexity"] < 0.7 * checkpoints[0]["perplexity"]
    assert report["stages"][-1]["metrics"]["perplexity"] == checkpoints[-1]["perplexity"]
    assert report["training"]["tokens"] >= 4000 and report["task"] == "lm"
    assert report["reload_check"]["same_predictions"]


def test_cli_recovery_flags(tiny_lm, tiny_text, tmp_path) -> None:
    base = ["prune", "--task", "lm", "-m", str(tiny_lm), "-d", str(tiny_text), "--seq-len", "32", "--eval-samples",
            "4", "--calib-samples", "8", "--method", "magnitude"]
    bad = runner.invoke(app, [*base, "--out", str(tmp_path / "a"), "--eval-every", "5"])
    assert bad.exit_code == 2 and "--finetune-tokens or --finetune-epochs" in bad.output
    bad = runner.invoke(app, [*base, "--out", str(tmp_path / "a"), "--lr", "1e-3"])  # no recovery: nothing trains
    assert bad.exit_code == 2 and "does not read --lr" in bad.output
    bad = runner.invoke(app, [*base, "--out", str(tmp_path / "b"), "--schedule", "iterative", "--finetune-tokens", "9"])
    assert bad.exit_code == 2 and "one-shot" in bad.output
    bad = runner.invoke(app, ["prune", "-m", str(tiny_lm), "-d", str(tiny_text), "--out", str(tmp_path / "c"),
                              "--finetune-tokens", "9"])
    assert bad.exit_code == 2 and "--finetune-tokens" in bad.output
    ok = runner.invoke(app, [*base, "--out", str(tmp_path / "d"), "--finetune-tokens", "500", "--lr", "1e-3",
                             "--batch-size", "2"])
    assert ok.exit_code == 0, ok.output
    assert json.loads((tmp_path / "d" / "report.json").read_text())["recovery"]["tokens"] >= 500


def test_the_classifier_loop_sends_an_lm_to_its_runner(tiny_lm, tiny_text, tmp_path) -> None:
    from prunekit.config import DataOptions

    with pytest.raises(PrunekitError, match="prunekit.prune_lm"):
        prunekit.prune(str(tiny_lm), DataOptions(str(tiny_text)), tmp_path / "p", task="lm")
    assert not (tmp_path / "p").exists()


def test_overlap_is_measured_on_long_runs_of_tokens() -> None:
    from prunekit.tasks.lm import overlap

    gen = torch.Generator().manual_seed(0)
    a, b = torch.randint(0, 1000, (3000,), generator=gen), torch.randint(0, 1000, (1000,), generator=gen)
    assert overlap(a, b) == 0.0
    assert overlap(a, a[500:1500]) == 1.0
    half = torch.cat([a[:500], b[:500]])  # the first half copied, the second new
    assert overlap(a, half) == pytest.approx(469 / 969, abs=0.01)


def test_the_progress_bar_counts_tokens(tiny_lm, tiny_text, monkeypatch) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import prunekit.train.loop as loop
    from prunekit.tasks.lm import LMTask, LMWindows, load_lm_text, training_windows
    from prunekit.train import TrainConfig, train

    seen = {}
    real = loop.tqdm

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "tqdm", spy)
    tok = AutoTokenizer.from_pretrained(tiny_lm)
    windows = LMWindows.of(training_windows(load_lm_text(tok, str(tiny_text)), 16))
    train(AutoModelForCausalLM.from_pretrained(tiny_lm), windows, tok, TrainConfig(epochs=0.1, batch_size=3),
          task=LMTask(seq_len=16))
    assert seen["unit"] == "tok" and seen["unit_scale"] == 3 * 16


def test_lm_distill_loss_is_the_temperature_scaled_kl_mixed_with_the_lm_loss() -> None:
    from prunekit.tasks.lm import lm_distill_loss
    from prunekit.train import DistillConfig

    gen = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 5, 7, generator=gen), torch.randn(2, 5, 7, generator=gen)
    labels = torch.randint(0, 7, (2, 5), generator=gen)
    assert float(lm_distill_loss(teacher, teacher, labels, DistillConfig(alpha=0.0))) == pytest.approx(0.0, abs=1e-6)
    kl = lm_distill_loss(student, teacher, labels, DistillConfig(alpha=0.0, temperature=2.0))
    s, t = student[:, :-1].reshape(-1, 7) / 2, teacher[:, :-1].reshape(-1, 7) / 2
    want = 4 * torch.nn.functional.kl_div(s.log_softmax(-1), t.log_softmax(-1), log_target=True, reduction="batchmean")
    assert float(kl) == pytest.approx(float(want), rel=1e-5)
    ce = torch.nn.functional.cross_entropy(student[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1))
    mixed = lm_distill_loss(student, teacher, labels, DistillConfig(alpha=0.25, temperature=2.0))
    assert float(mixed) == pytest.approx(float(0.25 * ce + 0.75 * want), rel=1e-5)


def test_a_recipe_refuses_the_lm_task_in_one_line() -> None:
    from prunekit.recipe import parse_recipe

    with pytest.raises(PrunekitError, match="recipes do not run --task lm yet"):
        parse_recipe({"model": "smollm2-135m", "task": "lm", "stages": [{"prune": {"sparsity": 0.5}}]})


def test_lora_recovery_of_a_two_four_lm_keeps_the_pattern_exact(tiny_lm, tiny_text, tmp_path) -> None:
    """`prune --task lm --pattern 2:4 --finetune-tokens N --lora R`: the adapters train, merge with the masks
    applied, and every 4-group keeps at most 2 weights; the report says what LoRA did."""
    out = tmp_path / "lora24"
    res = runner.invoke(app, ["prune", "--task", "lm", "-m", str(tiny_lm), "-d", str(tiny_text), "--out", str(out),
                              "--method", "wanda", "--pattern", "2:4", "--calib-samples", "8", "--seq-len", "32",
                              "--eval-samples", "4", "--finetune-tokens", "2000", "--lora", "4", "--lr", "3e-3"])
    assert res.exit_code == 0, res.output
    lora = json.loads((out / "report.json").read_text())["recovery"]["lora"]
    assert lora["rank"] == 4 and lora["trainable_params"] > 0
    model = prunekit.load(out)
    for name, module in model.named_modules():
        if name.startswith("model.layers") and isinstance(module, torch.nn.Linear):
            assert ((module.weight != 0).reshape(-1, 4).sum(-1) <= 2).all(), name
    bad = runner.invoke(app, ["prune", "--task", "lm", "-m", str(tiny_lm), "-d", str(tiny_text), "--out",
                              str(tmp_path / "bad"), "--sparsity", "0.5", "--lora", "4"])
    assert bad.exit_code == 2 and "does not read --lora" in bad.output  # nothing trains without a budget
