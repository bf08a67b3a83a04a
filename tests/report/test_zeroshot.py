"""Zero-shot evaluation through lm-eval: offline on the local copies, a user's task folder, and the bad inputs."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import prunekit
from prunekit import assets
from prunekit.cli import app
from prunekit.errors import PrunekitError
from prunekit.report.zeroshot import parse_tasks, resolve_tasks, zero_shot_scores

runner = CliRunner()
BUILT = all(assets.status().get(name) for name in ("lm-eval-tasks", "lambada", "smollm2-135m"))
needs_assets = pytest.mark.skipif(not BUILT, reason="needs `prunekit assets --only lm-eval-tasks lambada smollm2-135m`")

USER_TASK = """task: tiny_yesno
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {data}
validation_split: validation
output_type: multiple_choice
doc_to_text: "{{{{question}}}}\\nAnswer:"
doc_to_choice: ["no", "yes"]
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def _tiny_llama(folder: Path | None = None):
    """A random 2-layer Llama with SmolLM2's tokenizer (saved to ``folder`` when given)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(assets.ASSETS["smollm2-135m"].dest())
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    if folder is not None:
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
    return model, tok


@pytest.fixture()
def no_network(monkeypatch):
    """Any socket connection fails the test: offline means offline."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@needs_assets
def test_scores_on_local_copies_without_network(no_network):
    model, tok = _tiny_llama()
    model.train()
    before = os.environ.get("HF_HUB_OFFLINE")
    assert prunekit.zero_shot_scores is zero_shot_scores  # the public API name
    result = zero_shot_scores(model, tok, "hellaswag, piqa,arc_easy,lambada_openai", limit=4, batch_size=4)
    assert list(result["tasks"]) == ["hellaswag", "piqa", "arc_easy", "lambada_openai"]
    for task, row in result["tasks"].items():
        assert row["examples"] == 4 and 0.0 <= row["acc"] <= 1.0 and "acc_stderr" in row, task
    assert {"acc_norm", "acc_norm_stderr"} <= set(result["tasks"]["hellaswag"])
    assert result["tasks"]["lambada_openai"]["perplexity"] > 1.0
    assert result["mean_acc"] == pytest.approx(sum(r["acc"] for r in result["tasks"].values()) / 4)
    assert result["offline"] and result["limit"] == 4
    assert model.training and os.environ.get("HF_HUB_OFFLINE") == before  # state restored after the run


@needs_assets
def test_cli_user_task_folder_and_report(tmp_path, no_network):
    from prunekit.report.render import ZERO_SHOT_PNG

    model = tmp_path / "tiny"
    _tiny_llama(model)
    rows = [{"question": f"is {i} even", "label": int(i % 2 == 0)} for i in range(6)]
    (tmp_path / "yesno.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "tiny_yesno.yaml").write_text(USER_TASK.format(data=tmp_path / "yesno.jsonl"))
    text = tmp_path / "text.txt"
    text.write_text(" ".join(f"Sentence number {i} says something about the weather today." for i in range(300)))
    out = tmp_path / "out"
    result = runner.invoke(app, ["evaluate", "--task", "lm", "-m", str(model), "-d", str(text), "--seq-len", "32",
                                 "--eval-samples", "2", "--zero-shot", "tiny_yesno,copa", "--zero-shot-limit", "5",
                                 "--lm-eval-include", str(tasks), "--out", str(out)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "tiny_yesno" in result.output and "mean acc" in result.output
    report = json.loads((out / "report.json").read_text())
    assert set(report["zero_shot"]["tasks"]) == {"tiny_yesno", "copa"}
    assert report["zero_shot"]["tasks"]["tiny_yesno"]["examples"] == 5 and "perplexity" in report
    assert (out / ZERO_SHOT_PNG).stat().st_size > 0 and ZERO_SHOT_PNG in (out / "report.md").read_text()


def test_unknown_task_names_the_local_ones():
    with pytest.raises(PrunekitError, match=r"unknown lm-eval task 'hellaswagg'.*hellaswag"):
        resolve_tasks(["hellaswagg"])


def test_task_without_local_copy_says_how_to_supply_it():
    with pytest.raises(PrunekitError, match=r"'triviaqa' has no local copy.*--lm-eval-include.*--zero-shot-online"):
        resolve_tasks(["triviaqa"])


@needs_assets
def test_online_still_prefers_the_local_copy():
    _, specs = resolve_tasks(["piqa", "triviaqa"], online=True)
    assert specs[0]["dataset_path"] == "json" and specs[1] == "triviaqa"


def test_bad_task_lists_and_folders(tmp_path):
    with pytest.raises(PrunekitError, match="at least one"):
        parse_tasks(" , ")
    with pytest.raises(PrunekitError, match="no such folder"):
        resolve_tasks(["piqa"], include=[tmp_path / "missing"])


def test_zero_shot_refused_on_a_classifier(tmp_path):
    result = runner.invoke(app, ["evaluate", "-m", str(tmp_path), "-d", "movie-reviews", "--zero-shot", "piqa"])
    assert result.exit_code != 0
    assert "--zero-shot" in result.output and "--task lm" in result.output and "Traceback" not in result.output


def test_prune_task_lm_scores_dense_and_pruned_zero_shot(tmp_path, no_network):
    """`prune --task lm --zero-shot T`: the same lm-eval tasks on the dense model and the pruned one, side by side."""
    model = tmp_path / "tiny"
    _tiny_llama(model)
    text = tmp_path / "text.txt"
    text.write_text(" ".join(f"Sentence number {i} says something about the weather today." for i in range(300)))
    out = tmp_path / "pruned"
    result = runner.invoke(app, ["prune", "--task", "lm", "-m", str(model), "-d", str(text), "--seq-len", "32",
                                 "--eval-samples", "2", "--calib-samples", "4", "--method", "magnitude",
                                 "--sparsity", "0.5", "--zero-shot", "copa", "--zero-shot-limit", "4",
                                 "--out", str(out)], terminal_width=200)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    scored = report["zero_shot_stages"]
    assert set(scored) == {"dense", "final"}
    assert all(scored[k]["tasks"]["copa"]["examples"] == 4 for k in scored)
    assert report["stages"][0]["zero_shot_mean_acc"] == scored["dense"]["mean_acc"]
    refused = runner.invoke(app, ["prune", "-m", str(model), "-d", str(text), "--out", str(tmp_path / "c"),
                                  "--zero-shot", "copa"])
    assert refused.exit_code == 2 and "--zero-shot" in refused.output
