"""Recipes: validation before any work (unknown stage/key, impossible order, teacher labels) and a full run."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from prunekit.errors import PrunekitError
from prunekit.recipe import parse_recipe, run_recipe


def _recipe(stages, **top):
    return {"model": "unused", "data": {"data": "unused.csv"}, "stages": stages, **top}


@pytest.mark.parametrize(("stages", "message"), [
    ([{"prune": {"heads": 0.5}}, {"distil": {}}], "unknown stage 'distil' \\(did you mean 'distill'\\?\\)"),
    ([{"prune": {"head": 0.5}}], "unknown key 'head' \\(did you mean 'heads'\\?\\)"),
    ([{"prune": {"heads": "half"}}], "heads must be float"),
    ([{"prune": {"heads": 0.5}}, {"int8": {}}, {"finetune": {}}], "fine-tuning after int8 cannot work"),
    ([{"prune": {"heads": 0.5}}, {"fake_quant": {"bits": 4}}, {"distill": {}}], "after fake_quant"),
    ([{"lowrank": {"ratio": 0.5}}, {"prune": {"ffn": 0.5}}], "prune after lowrank"),
    ([{"distill": {}}], "teacher would be the student"),
    ([{"prune": {"heads": 0.5, "sparsity": 0.5}}], "exactly one kind"),
    ([{"prune": {"heads": 1.5}}], "\\[0, 1\\)"),
    ([{"prune": {"sparsity": 0.5, "method": "sparsegpt", "scope": "global"}}], "--scope local"),
    ([{"prune": {"sparsity": 0.5, "damp": 0.1}}], "--damp dampens SparseGPT"),
    ([{"lowrank": {}}], "exactly one of ratio"),
    ([{"fake_quant": {"bits": 1}}], "2…8"),
    ([{"int8": {}}, {"int8": {}}], "only one int8"),
    ([], "non-empty"),
])
def test_bad_recipes_fail_before_work(stages, message):
    with pytest.raises(PrunekitError, match=message):
        parse_recipe(_recipe(stages))


@pytest.mark.parametrize(("doc", "message"), [
    ({"stages": [{"finetune": 3}]}, r"stage 1 \(finetune\): expected a mapping of settings, got 3 \(int\)"),
    ({"stages": [{"prune": [1, 2]}]}, r"stage 1 \(prune\): expected a mapping of settings, got \[1, 2\]"),
    ({"stages": ["int8"], "latency": {"batch_sizes": [[1], 2]}},
     r"latency: batch_sizes must be a list of int, got \[\[1\], 2\]"),
    ({"stages": [{"finetune": {"epochs": None}}]}, r"stage 1 \(finetune\): epochs must be float"),
    ({"stages": [{"finetune": {"epochs": float("nan")}}]}, r"epochs must be float \(a finite number\), got nan"),
    ({"stages": [{"finetune": {"batch_size": 0}}]}, "batch_size must be >= 1, got 0"),
    ({"stages": [{"prune": {"heads": 0.5, "calib_batches": 0}}]}, "calib_batches must be >= 1"),
    ({"stages": [{"distill": {"teacher": "t", "layer_map": [0, "1"]}}]}, "layer_map must be a list of int"),
    ({"stages": [{"distill": {"teacher": "t", "layer_map": [0, -1]}}]}, "layer_map holds teacher layer indices"),
    ({"stages": [{"lowrank": {"ratio": 0.5, "exclude": "("}}]}, r"exclude '\(' is not a valid regular expression"),
    ({"stages": ["int8"], "data": {"text_columns": [1]}}, "data: text_columns must be a list of str"),
    ({"stages": ["int8"], "data": {"max_length": 0}}, "data: max_length must be >= 1"),
    ({"stages": ["int8"], "latency": {"min_seconds": -1}}, "latency: min_seconds must be >= 0"),
    ({"stages": ["int8"], "seed": True}, "seed must be int, got True"),
    ({"stages": ["int8"], "model": ["a"]}, "model must be str"),
    ({"stages": ["int8"], "trust_remote_code": "false"}, r"trust_remote_code must be bool \(true or false\)"),
    ({"stages": ["int8"], "out": 3}, "out must be str"),
])
def test_values_of_the_wrong_type_fail_in_one_line(doc, message):
    """Each of these was a TypeError traceback, a run that failed hours later, or (trust_remote_code: "false")
    silently true."""
    with pytest.raises(PrunekitError, match=message) as err:
        parse_recipe({"model": "m", **doc})
    assert "\n" not in str(err.value)


def test_one_text_column_may_be_a_string():
    recipe = parse_recipe(_recipe(["int8"], data={"data": "d.csv", "text_columns": "review"}))
    assert recipe.data.text_columns == ("review",)


def test_unknown_top_key_and_yaml_file(tmp_path):
    with pytest.raises(PrunekitError, match="unknown key 'stage'"):
        parse_recipe({"model": "m", "stage": []})
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_recipe([{"prune": {"heads": 0.5}}, "int8"])))
    recipe = parse_recipe(path)
    assert [s.kind for s in recipe.stages] == ["prune", "int8"] and recipe.stages[1].name == "02-int8"


def test_teacher_with_other_labels_fails_before_work(trained_tiny, tmp_path):
    from transformers import AutoConfig

    folder, csv = trained_tiny
    other = tmp_path / "other"
    other.mkdir()
    for f in folder.iterdir():
        if f.is_file():
            (other / f.name).write_bytes(f.read_bytes())
    config = AutoConfig.from_pretrained(other)
    config.id2label = {0: "positive", 1: "negative"}
    config.label2id = {"positive": 0, "negative": 1}
    config.save_pretrained(other)
    recipe = {"model": str(folder), "data": {"data": str(csv)},
              "stages": [{"distill": {"teacher": str(other)}}]}
    with pytest.raises(PrunekitError, match="predicts labels"):
        run_recipe(recipe, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_token_classifier_fails_the_check_even_with_a_finetune_first(tiny_bert_with_head, tiny_csv, tmp_path):
    """Before: --check passed, and the run fine-tuned a fresh sequence-classification head on it."""
    from transformers import BertForTokenClassification
    from typer.testing import CliRunner

    from prunekit.cli import app

    model = tiny_bert_with_head(BertForTokenClassification)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"model": str(model), "data": {"data": str(tiny_csv)},
                                    "stages": [{"finetune": {"epochs": 0.1}}, {"prune": {"heads": 0.5}}]}))
    result = CliRunner().invoke(app, ["run", str(path), "--check"])
    assert result.exit_code == 2 and "is a BertForTokenClassification (token classification)" in result.output


def test_recipe_runs_every_stage(trained_tiny, tmp_path):
    folder, csv = trained_tiny
    recipe = {
        "model": str(folder), "data": {"data": str(csv), "max_train_samples": 64, "max_eval_samples": 40},
        "latency": {"seq_len": 16, "rounds": 1, "min_seconds": 0.01},
        "stages": [
            {"prune": {"heads": 0.5, "ffn": 0.5}},
            {"distill": {"epochs": 1, "lr": 1e-3, "hidden_weight": 0.1, "batch_size": 16}},
            {"lowrank": {"energy": 0.95}},
            {"finetune": {"epochs": 1, "lr": 1e-3, "batch_size": 16}},
            {"int8": {}},
            {"onnx": {"calib_batches": 2, "seq_len": 16}},
        ],
    }
    report = run_recipe(recipe, tmp_path / "out")
    names = [s["name"] for s in report["stages"]]
    assert names == ["baseline", "01-prune", "02-distill", "03-lowrank", "04-finetune", "05-int8", "06-onnx"]
    for s in report["stages"]:
        assert s["disk_bytes"] > 0 and set(s["latency_ms"]) == {"batch_1", "batch_32"}
        assert s.get("reload_max_abs_logit_diff", 0.0) < 1e-4
    assert report["stages"][5]["disk_bytes"] < 0.8 * report["stages"][4]["disk_bytes"]  # tiny: float position table
    out = tmp_path / "out"
    assert (out / "tradeoff.png").is_file() and "tradeoff.png" in (out / "report.md").read_text()
    assert json.loads((out / "report.json").read_text())["settings"]["recipe"]["stages"][0]["prune"]["heads"] == 0.5
    assert (out / "stages" / "06-onnx" / "model.int8.onnx").is_file()


def test_recipe_sparsegpt_stage_keeps_its_zeros_through_finetuning(trained_tiny, tmp_path):
    from safetensors.torch import load_file

    folder, csv = trained_tiny
    recipe = {
        "model": str(folder), "data": {"data": str(csv), "max_train_samples": 64, "max_eval_samples": 40},
        "latency": {"seq_len": 16, "rounds": 0},
        "stages": [{"prune": {"sparsity": 0.5, "method": "sparsegpt", "calib_batches": 2, "damp": 0.05}},
                   {"finetune": {"epochs": 1, "lr": 1e-3, "batch_size": 16}}],
    }
    report = run_recipe(recipe, tmp_path / "out")
    assert [s["name"] for s in report["stages"]] == ["baseline", "01-prune", "02-finetune"]
    pruned, tuned = (load_file(str(tmp_path / "out" / "stages" / d / "model.safetensors"))
                     for d in ("01-prune", "02-finetune"))
    linears = [n for n in pruned if ".encoder.layer." in n and n.endswith(".weight") and pruned[n].dim() == 2]
    assert len(linears) == 12
    for name in linears:
        assert float((pruned[name] == 0).float().mean()) == pytest.approx(0.5, abs=0.01), name
        assert torch.equal(tuned[name] == 0, pruned[name] == 0) and not torch.equal(tuned[name], pruned[name]), name


def test_shipped_recipes_are_valid():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "recipes"
    files = sorted(folder.glob("*.yaml"))
    assert files
    for path in files:
        assert parse_recipe(path).stages


@pytest.mark.parametrize("name", ["../../X", "/tmp/abs", ".", "..", "a/b", "a\\b", "", "-rf", ".hidden", "x" * 101,
                                  "baseline", "bad name", "tab\t"])
def test_stage_names_are_plain_folder_names(name):
    """A stage's name becomes out/stages/NAME: a path in it would write model folders outside --out."""
    with pytest.raises(PrunekitError, match="must be a plain folder name"):
        parse_recipe(_recipe([{"prune": {"heads": 0.5, "name": name}}]))


def test_stage_names_unique_ignoring_case_and_plain_ones_pass():
    with pytest.raises(PrunekitError, match="unique"):
        parse_recipe(_recipe([{"prune": {"heads": 0.5, "name": "cut"}}, {"finetune": {"name": "CUT"}}]))
    recipe = parse_recipe(_recipe([{"prune": {"heads": 0.5, "name": "cut-1.v2_a"}}, {"finetune": {"name": 3}}]))
    assert [s.name for s in recipe.stages] == ["cut-1.v2_a", "3"]


def test_cli_check_reports_a_path_as_stage_name_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from prunekit.cli import app

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_recipe([{"prune": {"heads": 0.5, "name": "../../X"}}])))
    result = CliRunner().invoke(app, ["run", str(path), "--check"])
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "'../../X' must be a plain folder name" in lines[0]


def test_cli_check_refuses_an_out_on_an_input(tiny_classifier, tmp_path):
    from typer.testing import CliRunner

    from prunekit.cli import app

    recipes = tmp_path / "recipes"
    recipes.mkdir()
    path = recipes / "r.yaml"
    path.write_text(yaml.safe_dump(_recipe([{"prune": {"heads": 0.5}}], model=str(tiny_classifier), out=str(recipes))))
    for argv, how in (([], "contains the input recipe file"),
                      (["--out", str(tiny_classifier / "o")], "is inside the input model folder")):
        result = CliRunner().invoke(app, ["run", str(path), "--check", *argv])
        assert result.exit_code == 2 and how in result.output, result.output


def test_cli_check(tmp_path):
    from typer.testing import CliRunner

    from prunekit.cli import app

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_recipe([{"prune": {"heads": 0.5}}, {"int8": {}}, {"distill": {}}])))
    result = CliRunner().invoke(app, ["run", str(path), "--check"])
    assert result.exit_code == 2 and "after int8 cannot work" in result.output
    path.write_text("model: m\nstages:\n  - finetune: 3\n")
    result = CliRunner().invoke(app, ["run", str(path), "--check"])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit | None)
    assert result.output == f"error: {path}: stage 1 (finetune): expected a mapping of settings, got 3 (int)\n"


def test_a_second_sparsegpt_stage_keeps_the_first_stages_zeros(tiny_gpt2_classifier, tiny_csv, tmp_path):
    """SparseGPT's updates move not-yet-solved columns, zeros included, so a second solver stage would revive
    the first stage's zeros unless it keeps them (as --schedule iterative does). GPT-2's mlp.c_proj spans two
    128-column blocks, so the revival can happen here."""
    from safetensors.torch import load_file

    recipe = {
        "model": str(tiny_gpt2_classifier), "data": {"data": str(tiny_csv)},
        "latency": {"seq_len": 16, "rounds": 0},
        "stages": [{"prune": {"sparsity": 0.3, "method": "sparsegpt", "calib_batches": 2}},
                   {"prune": {"sparsity": 0.6, "method": "sparsegpt", "calib_batches": 2}}],
    }
    run_recipe(recipe, tmp_path / "out")
    first, second = (load_file(str(tmp_path / "out" / "stages" / d / "model.safetensors"))
                     for d in ("01-prune", "02-prune"))
    linears = [n for n in first if n.startswith("transformer.h.") and n.endswith(".weight") and first[n].dim() == 2]
    assert len(linears) == 8
    for name in linears:
        assert float((second[name] == 0).float().mean()) == pytest.approx(0.6, abs=0.01), name
        assert not (second[name][first[name] == 0]).any(), name


def test_a_second_criterion_stage_counts_the_first_stages_zeros(trained_tiny, tmp_path):
    """Magnitude to 0.3, then random to 0.5: the second stage keeps the first's zeros and stops at 0.5 (a fresh
    random pick would leave the union of both, about 0.65)."""
    from safetensors.torch import load_file

    folder, csv = trained_tiny
    recipe = {
        "model": str(folder), "data": {"data": str(csv), "max_train_samples": 64, "max_eval_samples": 40},
        "latency": {"seq_len": 16, "rounds": 0},
        "stages": [{"prune": {"sparsity": 0.3}}, {"prune": {"sparsity": 0.5, "method": "random"}}],
    }
    run_recipe(recipe, tmp_path / "out")
    first, second = (load_file(str(tmp_path / "out" / "stages" / d / "model.safetensors"))
                     for d in ("01-prune", "02-prune"))
    linears = [n for n in first if ".encoder.layer." in n and n.endswith(".weight") and first[n].dim() == 2]
    zeros = sum(int((second[n] == 0).sum()) for n in linears) / sum(second[n].numel() for n in linears)
    assert zeros == pytest.approx(0.5, abs=0.01)
    assert all(not second[n][first[n] == 0].any() for n in linears)
