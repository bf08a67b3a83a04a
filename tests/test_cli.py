"""The command layer: help with examples on every command, one-line errors, real runs on a tiny model."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from prunekit.cli import app

runner = CliRunner()
COMMANDS = ["assets", "finetune", "evaluate", "prune", "inspect", "export", "demo", "sensitivity", "search"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_examples_and_seed(command):
    result = runner.invoke(app, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert "Examples" in result.output
    if command != "assets":
        assert "--seed" in result.output


def test_prune_help_lists_the_public_flags():
    out = runner.invoke(app, ["prune", "--help"], terminal_width=200).output
    for flag in ["--model", "--data", "--sparsity", "--out", "--method", "--scope", "--schedule", "--steps",
                 "--finetune-epochs", "--threshold", "--max-drop", "--seed"]:
        assert flag in out


def test_bad_input_is_one_line_and_exit_2(tmp_path, tiny_csv):
    result = runner.invoke(app, ["prune", "-m", str(tmp_path / "missing"), "-d", str(tiny_csv), "--out",
                                 str(tmp_path / "o")])
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "no such folder" in lines[0]
    assert not (tmp_path / "o").exists()


def test_a_qa_model_or_a_file_as_model_is_one_line_and_exit_2(tiny_bert_with_head, tiny_csv, tmp_path):
    """Before: the QA model was pruned as a sequence classifier with a fresh head; the file said "no config.json"."""
    from transformers import BertForQuestionAnswering

    qa = tiny_bert_with_head(BertForQuestionAnswering)
    for model, says in [(qa, "is a BertForQuestionAnswering (question answering); prunekit supports sequence "
                             "classification and causal LMs (--task lm) for now"),
                        (qa / "config.json", f"is a file; give the model folder ({qa})")]:
        result = runner.invoke(app, ["prune", "-m", str(model), "-d", str(tiny_csv), "--out", str(tmp_path / "o"),
                                     "--no-latency"])
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and says in lines[0], result.output
        assert not (tmp_path / "o").exists()


def test_sparsity_out_of_range_from_cli(trained_tiny, tmp_path):
    clf, csv = trained_tiny
    result = runner.invoke(app, ["prune", "-m", str(clf), "-d", str(csv), "--out", str(tmp_path / "o"),
                                 "--sparsity", "1.2"])
    assert result.exit_code == 2 and "[0, 1)" in result.output
    result = runner.invoke(app, ["prune", "-m", str(clf), "-d", str(csv), "--out", str(tmp_path / "o"),
                                 "--damp", "0.1"])  # a classifier's --damp is read, and is SparseGPT's only
    assert result.exit_code == 2 and "--damp dampens SparseGPT" in result.output


def test_prune_evaluate_inspect_round_trip(trained_tiny, tmp_path):
    clf, csv = trained_tiny
    out = tmp_path / "pruned"
    result = runner.invoke(app, ["prune", "-m", str(clf), "-d", str(csv), "--out", str(out), "--sparsity", "0.6",
                                 "--schedule", "iterative", "--steps", "2", "--lr", "1e-3", "--no-latency",
                                 "--seed", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["prune"]["schedule"] == "iterative" and report["seed"] == 1
    measured = report["stages"][-1]["metrics"]
    result = runner.invoke(app, ["evaluate", "-m", str(out), "-d", str(csv), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output[result.output.index("{"):]) == pytest.approx(measured, abs=1e-6)
    result = runner.invoke(app, ["inspect", str(out), "--json"])
    info = json.loads(result.output[result.output.index("{"):])
    assert info["layer_sparsity"]["bert.encoder.layer.0.attention.self.query"] > 0.3
    assert runner.invoke(app, ["inspect", str(out)], terminal_width=200).exit_code == 0


def test_prune_ramp_and_distillation_flags_reach_the_run(trained_tiny, tmp_path):
    clf, csv = trained_tiny
    out = tmp_path / "pruned"
    result = runner.invoke(app, ["prune", "-m", str(clf), "-d", str(csv), "--out", str(out), "--sparsity", "0.5",
                                 "--ramp-end", "0.3", "--distill", "--distill-alpha", "0.2", "--temperature", "3",
                                 "--distill-hidden", "0.5", "--lr", "1e-3", "--no-latency"])
    assert result.exit_code == 0, result.output
    settings = json.loads((out / "report.json").read_text())["settings"]["prune"]
    assert (settings["ramp_end"], settings["distill"], settings["distill_alpha"], settings["temperature"],
            settings["distill_hidden"]) == (0.3, True, 0.2, 3.0, 0.5)
    bad = runner.invoke(app, ["prune", "-m", str(clf), "-d", str(csv), "--out", str(tmp_path / "bad"),
                              "--distill", "--distill-alpha", "2"])
    assert bad.exit_code == 2 and "alpha" in bad.output and not (tmp_path / "bad").exists()


def test_sensitivity_search_and_prune_plan_from_the_cli(trained_tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    clf, csv = trained_tiny
    common = ["-m", str(clf), "-d", str(csv), "--importance", "l2", "--ratios", "0.5"]
    result = runner.invoke(app, ["sensitivity", *common, "--granularity", "ffn", "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s" / "sensitivity.json").is_file()
    result = runner.invoke(app, ["search", *common, "--budget", "params=0.7", "--steps", "100", "--evals", "2",
                                 "--out", str(tmp_path / "plan")])
    assert result.exit_code == 0, result.output
    plan = str(tmp_path / "plan" / "plan.yaml")
    result = runner.invoke(app, ["prune", "-m", str(clf), "-d", str(csv), "--plan", plan,
                                 "--finetune-epochs", "0", "--no-latency", "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["search", *common, "--budget", "flops=2", "--out", str(tmp_path / "bad")])
    assert result.exit_code == 2 and "--budget must look like" in result.output


def test_structured_prune_then_export_from_the_cli(trained_tiny, tmp_path):
    pytest.importorskip("onnxruntime")
    clf, csv = trained_tiny
    out = tmp_path / "narrow"
    result = runner.invoke(app, ["prune", "-m", str(clf), "-d", str(csv), "--out", str(out), "--heads", "0.5",
                                 "--ffn", "0.5", "--layers", "1", "--layer-importance", "loss",
                                 "--finetune-epochs", "0", "--no-latency"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["prune"]["layer_importance"] == "loss" and report["shapes"]["num_layers"] == 1
    result = runner.invoke(app, ["export", str(out), "--onnx", str(tmp_path / "m.onnx"), "--seq-len", "16"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.onnx").exists()
    assert float(result.output.rsplit("max abs diff", 1)[1]) <= 1e-4
    bad = runner.invoke(app, ["prune", "-m", str(clf), "-d", str(csv), "--out", str(tmp_path / "bad"),
                              "--layers", "1", "--layer-importance", "depth"])
    assert bad.exit_code == 2 and "unknown --layer-importance" in bad.output
    assert not (tmp_path / "bad").exists()


def _hashes(root):
    """Every file under ``root`` (links followed) → its sha256: to show an input left byte-for-byte unchanged."""
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _out_cases(model, data_dir, root):
    """(argv, the input folder/file that must survive) for every command that writes an --out."""
    import yaml

    csv = str(data_dir / "train.csv")
    m = ["-m", str(model), "-d", csv]
    recipe = root / "recipes" / "r.yaml"
    recipe.parent.mkdir()
    recipe.write_text(yaml.safe_dump({"model": str(model), "data": {"data": csv},
                                      "stages": [{"prune": {"heads": 0.5}}]}))
    teacher_recipe = root / "recipes" / "t.yaml"
    teacher_recipe.write_text(yaml.safe_dump({"model": "someone/hub-model", "data": {"data": csv}, "stages": [
        {"prune": {"heads": 0.5}}, {"distill": {"teacher": str(model)}}]}))
    plan = root / "plans" / "plan.yaml"
    plan.parent.mkdir()
    plan.write_text("granularity: structured\n")
    (root / "link").symlink_to(model, target_is_directory=True)
    return [
        (["prune", *m, "--out", str(model), "--force"], "is the input model folder"),
        (["prune", *m, "--out", str(model / "sub")], "is inside the input model folder"),
        (["prune", *m, "--out", f"{model}/../{model.name}/", "--force"], "is the input model folder"),
        (["prune", *m, "--out", str(root / "link"), "--force"], "is the input model folder"),
        (["prune", *m, "--out", str(root), "--force"], "contains the input model folder"),
        (["prune", "-m", str(model), "-d", str(data_dir), "--out", str(data_dir / "o")],
         "is inside the input data folder"),
        (["prune", *m, "--plan", str(plan), "--out", str(plan.parent), "--force"], "contains the input plan file"),
        (["finetune", *m, "--out", str(model), "--force"], "is the input model folder"),
        (["sensitivity", *m, "--out", str(model / "s")], "is inside the input model folder"),
        (["search", *m, "--budget", "params=0.5", "--out", str(model), "--force"], "is the input model folder"),
        (["export", str(model), "--onnx", str(model / "model.onnx"), "--force"], "is inside the input model folder"),
        (["run", str(recipe), "--out", str(model / "r")], "is inside the input model folder"),
        (["run", str(teacher_recipe), "--out", str(model), "--force"], "is the input teacher (stage 02-distill) "),
        (["run", str(recipe), "--out", str(recipe.parent), "--force"], "contains the input recipe file"),
    ]


def test_out_on_top_of_an_input_is_refused_and_the_input_untouched(tiny_classifier, tmp_path):
    """Before any work, with or without --force: one line, exit 2, every input byte-for-byte unchanged."""
    root = tmp_path / "work"
    root.mkdir()
    model = root / "M"
    tiny_classifier.rename(model)
    data_dir = root / "data"
    data_dir.mkdir()
    from conftest import tiny_rows

    tiny_rows(40).to_csv(data_dir / "train.csv", index=False)
    for argv, how in _out_cases(model, data_dir, root):
        before = _hashes(root)
        result = runner.invoke(app, argv)
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert result.exit_code == 2 and len(lines) == 1, (argv, result.output)
        assert lines[0].startswith("error: --") and how in lines[0] and "choose another" in lines[0], argv
        assert _hashes(root) == before, argv
        assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == [], argv


def test_demo_replaces_only_its_own_earlier_output(tmp_path, monkeypatch):
    """A non-empty --out that is not an earlier demo's output is the user's: demo refuses it without --force."""
    import prunekit.pipeline

    calls = []
    monkeypatch.setattr(prunekit.pipeline, "default_baseline", lambda seed: tmp_path / "baseline")
    monkeypatch.setattr(prunekit.pipeline, "prune", lambda *a, **k: calls.append(k["force"]))
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    result = runner.invoke(app, ["demo", "--out", str(mine)])
    assert result.exit_code == 2 and "not empty" in result.output and calls == [], result.output
    assert (mine / "notes.txt").read_text() == "keep"
    earlier = tmp_path / "demo-output"
    earlier.mkdir()
    (earlier / "report.json").write_text('{"command": "prunekit demo"}')
    assert runner.invoke(app, ["demo", "--out", str(earlier)]).exit_code == 0 and calls == [True]
    assert runner.invoke(app, ["demo", "--out", str(mine), "--force"]).exit_code == 0 and calls == [True, True]


def test_demo_refuses_an_out_on_its_cached_baseline(tmp_path, monkeypatch):
    """demo always replaces --out: it must not land on (or around) the cached baseline it prunes."""
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    baseline = tmp_path / "cache" / "runs" / "minilm-movie-reviews-seed0"
    baseline.mkdir(parents=True)
    (baseline / "config.json").write_text("{}")
    for out in (baseline, tmp_path / "cache"):
        result = runner.invoke(app, ["demo", "--out", str(out)])
        assert result.exit_code == 2 and "the input model folder" in result.output, result.output
        assert (baseline / "config.json").read_text() == "{}"


def test_prune_help_is_grouped_by_concern_with_the_common_options_first():
    """Before: one 468-line panel at 80 columns, the common options lost among ~60."""
    out = runner.invoke(app, ["prune", "--help"], env={"COLUMNS": "80", "TERM": "dumb", "NO_COLOR": "1"}).output
    panels = [line.strip("╭─ ╮").rsplit(" ─", 1)[0].strip() for line in out.splitlines() if line.startswith("╭─")]
    assert panels == ["Options", "What to prune", "Criterion", "Schedule", "Recovery", "Distillation", "Calibration",
                      "Search plans and learned structure", "Language models (--task lm)", "Data and model loading",
                      "Output and runs"]
    first = out[out.index("╭─ Options"):out.index("╭─ What to prune")]
    for flag in ["--model", "--data", "--out", "--sparsity", "--heads", "--ffn"]:
        assert flag in first
    # 271 lines when this test was written; LoRA, QA windows, LM recovery and zero-shot options added ~70
    assert len(out.splitlines()) < 360


@pytest.mark.parametrize(("args", "says"), [
    (["--seq-len", "256", "--save", "dense"], "error: --seq-len, --save: --task lm options, not read by a classifier"),
    (["--no-reconstruct"], "error: --no-reconstruct: --task lm options"),
    (["--task", "lm", "--schedule", "oneshot", "--lr", "1e-3", "--no-resume", "--text-column", "t"],
     "error: --task lm does not read --schedule, --lr, --text-column, --no-resume (classifier options)"),
    (["--task", "lm", "--heads", "0.5", "--pattern", "2:4", "--method", "wanda"],
     "error: --method, --pattern: unstructured one-shot options, not used with --heads/--ffn/--layers"),
    (["--task", "lm", "--round-to", "8", "--no-latency"],
     "error: --round-to, --no-latency: structured LM options (--heads/--ffn/--layers), not used without them"),
    (["--schedule", "oneshot", "--ramp-end", "0.3"], "error: the gradual schedule's cubic ramp (--ramp-end) is not "
                                                     "used by --schedule oneshot"),
    (["--heads", "0.5", "--max-drop", "1"], "error: --max-drop applies to the unstructured schedules"),
    (["--temperature", "4"], "error: without --distill there is no distillation loss for --temperature"),
    (["--method", "random", "--calib-batches", "4"], "error: --calib-batches feeds data-driven criteria; --method "
                                                      "random scores the weights alone"),
])
def test_prune_refuses_options_that_do_not_apply_naming_them(tmp_path, tiny_csv, args, says):
    """Before: each of these was silently ignored."""
    result = runner.invoke(app, ["prune", "-m", str(tmp_path / "m"), "-d", str(tiny_csv), "--out", str(tmp_path / "o"),
                                 *args])
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith(says), result.output
    assert not (tmp_path / "o").exists()


def test_prune_task_lm_options_become_the_lm_settings(tmp_path, monkeypatch):
    """The CLI only parses: prune_lm_from_options builds OneShotSettings / StructuredLM and reads the plan."""
    import yaml

    import prunekit.pipeline_lm as pipeline_lm

    calls = []
    monkeypatch.setattr(pipeline_lm, "prune_lm", lambda *a, **kw: calls.append((a, kw)))
    base = ["prune", "--task", "lm", "-m", "lm", "-d", "text.txt", "--out", str(tmp_path / "o"), "--seq-len", "64"]
    assert runner.invoke(app, [*base, "--method", "wanda", "--pattern", "2:4", "--damp", "0.05"]).exit_code == 0
    (model, data, out, settings), kw = calls[-1]
    assert (model, data, settings.method, settings.pattern, settings.sparsity, settings.damp) == (
        "lm", "text.txt", "wanda", "2:4", 0.5, 0.05)
    assert kw["seq_len"] == 64 and kw["structured"] is None and kw["save"] == "packed"
    assert runner.invoke(app, [*base, "--heads", "0.25", "--layers", "1", "--round-to", "8"]).exit_code == 0
    structured = calls[-1][1]["structured"]
    assert (structured.heads, structured.layers, structured.round_to, structured.reconstruct) == (0.25, 1, 8, True)
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({"prunekit_plan": 1, "granularity": "unstructured", "block_sparsity": [0.2, 0.6]}))
    assert runner.invoke(app, [*base, "--plan", str(plan)]).exit_code == 0
    (*_, settings), kw = calls[-1]
    assert settings.block_ratios == [0.2, 0.6] and settings.sparsity == pytest.approx(0.4)
    assert kw["plan"]["block_sparsity"] == [0.2, 0.6]
