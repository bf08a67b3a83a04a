"""LoRA recovery: adapters on the prunable layers, merged with the mask so the sparsity stays exact."""

from __future__ import annotations

import pytest
import torch
from transformers import BertForSequenceClassification, LlamaConfig, LlamaForCausalLM

from prunekit.arch.families import prunable_weights
from prunekit.errors import PrunekitError
from prunekit.prune import MaskSet
from prunekit.prune.masks import keep_n_of_m
from prunekit.train.lora import LoraOptions, merge, wrap


def _llama() -> LlamaForCausalLM:
    cfg = LlamaConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=48, tie_word_embeddings=True, max_position_embeddings=64)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg)


def _masked(model: torch.nn.Module, pattern: str) -> MaskSet:
    params = prunable_weights(model)
    masks = MaskSet(params)
    if pattern == "2:4":
        masks.update({n: keep_n_of_m(p.abs(), 2, 4) for n, p in params.items()})
    else:
        masks.update({n: p.abs() > p.abs().flatten().median() for n, p in params.items()})
    return masks


def _train_adapters(model: torch.nn.Module) -> None:
    """Make every adapter's update nonzero (B starts at zero, so an untrained merge would prove nothing)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)


@pytest.mark.parametrize("arch", ["bert", "llama"])
@pytest.mark.parametrize("pattern", ["50%", "2:4"])
def test_merge_keeps_the_mask_exactly(tiny_model: BertForSequenceClassification, arch: str, pattern: str) -> None:
    model = tiny_model if arch == "bert" else _llama()
    masks = _masked(model, pattern)
    zeros = {n: m.clone() for n, m in masks.masks.items()}
    before = {n: p.detach().clone() for n, p in masks.params.items()}
    wrap(model, LoraOptions(rank=4), masks)
    _train_adapters(model)
    merge(model, masks)
    for name, keep in zeros.items():
        w = model.get_submodule(name).weight
        assert bool((w[~keep] == 0).all()), name  # fails if the update is merged dense
        assert not torch.equal(w, before[name]), name  # the update did land on the kept weights
    if pattern == "2:4":
        for name in zeros:
            w = model.get_submodule(name).weight
            assert bool(((w != 0).reshape(w.shape[0], -1, 4).sum(-1) <= 2).all())


def test_without_the_mask_the_merge_would_refill(tiny_model: BertForSequenceClassification) -> None:
    """The counter-check: an unmasked (structured) merge fills pruned weights — so the test above tests something."""
    masks = _masked(tiny_model, "50%")
    wrap(tiny_model, LoraOptions(rank=4), masks)
    _train_adapters(tiny_model)
    merge(tiny_model, None)
    assert masks.sparsity() < 0.1


def test_trainable_are_the_adapters_and_the_head(tiny_model: BertForSequenceClassification) -> None:
    run = wrap(tiny_model, LoraOptions(rank=4), _masked(tiny_model, "50%"))
    trainable = {n for n, p in tiny_model.named_parameters() if p.requires_grad}
    assert all("lora_" in n or n.startswith("classifier.") for n in trainable)
    assert {"classifier.weight", "classifier.bias"} <= trainable
    # 2 layers x 6 Linears (q, k, v, attn-out, ffn-in, ffn-out): r * (in + out) each, + the head (32 * 2 + 2)
    adapters = 2 * 4 * (4 * (32 + 32) + (32 + 64) + (64 + 32))
    assert run.trainable_params == adapters + 66


def test_llama_head_stays_frozen() -> None:
    model = _llama()
    run = wrap(model, LoraOptions(rank=2))
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    assert run.trainable_params > 0


def test_merged_model_is_plain_and_reloads(tiny_model: BertForSequenceClassification, tmp_path) -> None:
    names = [n for n, _ in tiny_model.named_modules()]
    masks = _masked(tiny_model, "50%")
    wrap(tiny_model, LoraOptions(rank=4), masks)
    _train_adapters(tiny_model)
    merge(tiny_model, masks)
    assert [n for n, _ in tiny_model.named_modules()] == names
    assert not any(type(m).__module__.startswith("peft") for m in tiny_model.modules())
    tiny_model.save_pretrained(tmp_path)
    back = BertForSequenceClassification.from_pretrained(tmp_path)
    for name, keep in masks.masks.items():
        assert torch.equal(back.get_submodule(name).weight, tiny_model.get_submodule(name).weight)
        assert bool((back.get_submodule(name).weight[~keep] == 0).all())


def test_rank_larger_than_a_layer_is_refused(tiny_model: BertForSequenceClassification) -> None:
    with pytest.raises(PrunekitError, match=r"--lora 40 is larger than layer bert\.encoder\.layer\.0\."):
        wrap(tiny_model, LoraOptions(rank=40))


def test_text_nets_and_nothing_to_adapt_are_refused(tiny_model: BertForSequenceClassification) -> None:
    from _textnet_zoo import tiny

    with pytest.raises(PrunekitError, match="peft cannot wrap .*recurrent/conv layers"):
        wrap(tiny("lstm"), LoraOptions(rank=2))
    with pytest.raises(PrunekitError, match="--lora: nothing to adapt"):
        wrap(torch.nn.Sequential(torch.nn.Embedding(4, 4)), LoraOptions(rank=2))
    with pytest.raises(PrunekitError, match="positive integer rank"):
        wrap(tiny_model, LoraOptions(rank=0))


def test_cli_prune_with_lora_keeps_exact_sparsity(trained_tiny, tmp_path) -> None:
    import json

    from transformers import AutoModelForSequenceClassification
    from typer.testing import CliRunner

    from prunekit.cli import app

    clf, csv = trained_tiny
    out = tmp_path / "pruned"
    result = CliRunner().invoke(app, ["prune", "-m", str(clf), "-d", str(csv), "--out", str(out), "--sparsity",
                                      "0.5", "--lora", "4", "--lr", "1e-3", "--no-latency"])  # gradual: the default
    assert result.exit_code == 0, result.output
    final = json.loads((out / "report.json").read_text())["stages"][-1]
    assert final["lora"]["rank"] == 4 and final["lora"]["alpha"] == 8.0 and final["lora"]["trainable_params"] > 0
    assert final["lora"]["sparsity_after_merge"] == pytest.approx(0.5, abs=1e-6) == final["sparsity"]
    back = AutoModelForSequenceClassification.from_pretrained(out)
    weights = prunable_weights(back)
    zeros = sum(int((w == 0).sum()) for w in weights.values()) / sum(w.numel() for w in weights.values())
    assert zeros == pytest.approx(0.5, abs=1e-6)


def test_cli_finetune_with_lora_and_bad_flags(tiny_classifier, tiny_csv, tmp_path) -> None:
    import json

    from typer.testing import CliRunner

    from prunekit.cli import app

    runner = CliRunner()
    base = ["finetune", "-m", str(tiny_classifier), "-d", str(tiny_csv), "--epochs", "0.2", "--no-latency"]
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "ft"), "--lora", "2", "--lora-alpha", "4"])
    assert result.exit_code == 0, result.output
    lora = json.loads((tmp_path / "ft" / "report.json").read_text())["training"]["lora"]
    assert lora["rank"] == 2 and lora["alpha"] == 4.0 and lora["sparsity_after_merge"] is None
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "big"), "--lora", "100"])
    assert result.exit_code == 2 and "--lora 100 is larger than layer bert.encoder.layer.0" in result.output
    result = runner.invoke(app, ["prune", "-m", str(tiny_classifier), "-d", str(tiny_csv), "--out",
                                 str(tmp_path / "p"), "--lora-alpha", "4"])
    assert result.exit_code == 2 and "--lora-alpha" in result.output and "add --lora R" in result.output
    result = runner.invoke(app, ["prune", "-m", str(tiny_classifier), "-d", str(tiny_csv), "--out",
                                 str(tmp_path / "m"), "--method", "movement", "--lora", "2", "--no-latency"])
    assert result.exit_code == 2 and "--lora freezes the weights" in result.output


def test_recipe_finetune_stage_takes_lora(trained_tiny, tmp_path) -> None:
    from safetensors.torch import load_file

    from prunekit.recipe import run_recipe

    folder, csv = trained_tiny
    recipe = {"model": str(folder), "data": {"data": str(csv), "max_train_samples": 64, "max_eval_samples": 40},
              "latency": {"seq_len": 16, "rounds": 0},
              "stages": [{"prune": {"sparsity": 0.5}}, {"finetune": {"epochs": 1, "lr": 1e-2, "lora": 2}}]}
    report = run_recipe(recipe, tmp_path / "out")
    assert report["stages"][-1]["lora"]["rank"] == 2
    pruned, tuned = (load_file(str(tmp_path / "out" / "stages" / d / "model.safetensors"))
                     for d in ("01-prune", "02-finetune"))
    changed = [n for n in pruned if ".encoder.layer." in n and n.endswith(".weight") and pruned[n].dim() == 2]
    for name in changed:
        assert torch.equal(tuned[name] == 0, pruned[name] == 0) and not torch.equal(tuned[name], pruned[name]), name
