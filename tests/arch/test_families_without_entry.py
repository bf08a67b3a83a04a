"""Families without a table entry through the CLI and the pipeline: one-shot and unstructured pruning
work end to end (saved, reload-checked); structured pruning is refused in one line."""

from __future__ import annotations

import _family_zoo as zoo  # tests/ is on pytest's pythonpath
import pytest

one_thread = zoo.one_thread  # autouse fixture
build = zoo.build


def test_cli_prunes_a_family_without_entry_one_shot_and_refuses_structured_in_one_line(tiny_lm, tiny_text, tmp_path):
    from transformers import AutoTokenizer
    from typer.testing import CliRunner

    from prunekit.cli import app

    folder = tmp_path / "phi3"
    build("phi3").save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_lm).save_pretrained(folder)
    common = ["prune", "--task", "lm", "-m", str(folder), "-d", str(tiny_text), "--seq-len", "32",
              "--calib-samples", "8", "--eval-samples", "4"]
    done = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "wanda"), "--method", "wanda"])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "wanda" / "report.json").is_file()
    refused = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "heads"), "--heads", "0.5"])
    assert refused.exit_code != 0 and "Traceback" not in refused.output
    line = next(x for x in refused.output.splitlines() if "error" in x.lower())
    assert "structured pruning of phi3 models is not supported yet" in line and "fused qkv_proj" in line
    assert "unstructured and one-shot pruning work" in line
    assert not (tmp_path / "heads").exists()


@pytest.mark.parametrize("model_type", ["deberta-v2", "modernbert", "albert", "mpnet"])
def test_encoders_prune_unstructured_end_to_end(model_type, tiny_classifier, tiny_csv, tmp_path):
    from transformers import AutoTokenizer

    from prunekit.config import DataOptions, PruneSettings
    from prunekit.pipeline import prune

    folder = tmp_path / model_type
    model = build(model_type)
    model.config.id2label, model.config.label2id = {0: "negative", 1: "positive"}, {"negative": 0, "positive": 1}
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_classifier).save_pretrained(folder)
    report = prune(str(folder), DataOptions(str(tiny_csv), max_train_samples=32, max_length=32), tmp_path / "out",
                   PruneSettings(sparsity=0.5, schedule="oneshot", finetune_epochs=0.5, latency=False))
    assert report["stages"][-1]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert report["reload_check"]["same_predictions"]
