"""--task embedding: a tiny BertModel inside a hand-written sentence-transformers folder, the real squad/mrpc
assets for evaluation (small caps)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from prunekit.cli import app
from prunekit.config import DataOptions, PruneSettings
from prunekit.errors import PrunekitError
from prunekit.io.sbert import Pooling, read_pooling, write_sentence_transformers
from prunekit.pipeline import evaluate, prune
from prunekit.report.metrics import pair_auc, retrieval_metrics
from prunekit.tasks import get_task
from prunekit.tasks.base import EncodedSplit
from prunekit.tasks.embedding import as_embedder, distill_loss, embed
from prunekit.train import DistillConfig, TrainConfig, train

DATA = DataOptions("squad", max_train_samples=48, max_eval_samples=8, max_length=32)


@pytest.fixture()
def st_folder(tiny_encoder: Path) -> Path:
    """The tiny encoder as a sentence-transformers folder: mean pooling, normalised."""
    write_sentence_transformers(tiny_encoder, Pooling("mean", True, 64), 32)
    return tiny_encoder


def _probe(tokenizer, texts: list[str]) -> EncodedSplit:
    enc = tokenizer(texts, truncation=True, max_length=32)
    return EncodedSplit([{"input_ids": ids, "attention_mask": m} for ids, m in
                         zip(enc["input_ids"], enc["attention_mask"], strict=True)], [0] * len(texts))


def test_retrieval_metrics_on_a_hand_case():
    passages = np.eye(3)
    queries = np.array([[1.0, 0.1, 0.0], [0.9, 0.5, 0.0], [0.0, 0.2, 1.0]])
    # query 0 → passage 0 (rank 1); query 1 → passage 1 ranks 2nd; query 2 → passage 0 ranks 3rd (after 2, 1)
    m = retrieval_metrics(queries, passages, [0, 1, 0])
    assert m["recall_at_1"] == pytest.approx(1 / 3)
    assert m["mrr_at_10"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    a, b = np.array([[1.0, 0.0], [1.0, 0.0]]), np.array([[1.0, 0.1], [0.0, 1.0]])
    assert pair_auc(a, b, [1, 0]) == 1.0 and pair_auc(a, b, [0, 1]) == 0.0


def test_ties_do_not_count_as_hits():
    m = retrieval_metrics(np.ones((2, 2)), np.ones((3, 2)), [0, 2])
    assert m["recall_at_1"] == 0.0


def test_save_reload_with_sentence_transformers(st_folder: Path, tmp_path: Path):
    from sentence_transformers import SentenceTransformer

    task = get_task("embedding")
    model, tok, new = task.load_model(str(st_folder), None)
    assert not new
    out = tmp_path / "saved"
    shutil.copytree(st_folder, out)
    check = task.save_files(model, tok, out)["sentence_transformers"]
    assert check["loads"] and check["max_abs_diff"] <= 1e-4
    texts = ["the movie was good", "a dull plot"]
    want = embed(model, _probe(tok, texts), tok, desc=False)
    got = SentenceTransformer(str(out), device="cpu").encode(texts)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.allclose(np.linalg.norm(want, axis=1), 1.0, atol=1e-5)  # Normalize kept


def test_pooling_module_missing_is_one_line(st_folder: Path):
    shutil.rmtree(st_folder / "1_Pooling")
    with pytest.raises(PrunekitError, match="pooling module's config"):
        read_pooling(st_folder)
    modules = json.loads((st_folder / "modules.json").read_text())
    (st_folder / "modules.json").write_text(json.dumps([m for m in modules if "Pooling" not in m["type"]]))
    with pytest.raises(PrunekitError, match="no Pooling module"):
        get_task("embedding").load_model(str(st_folder), None)


def test_classifier_folder_is_refused(tiny_classifier: Path):
    with pytest.raises(PrunekitError, match="--task embedding needs a sentence encoder"):
        get_task("embedding").load_model(str(tiny_classifier), None)


def test_distillation_lowers_the_mse_to_the_teacher(st_folder: Path):
    task = get_task("embedding")
    teacher, tok, _ = task.load_model(str(st_folder), None)
    student, _, _ = task.load_model(str(st_folder), None)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.2 * torch.randn_like(p))
    texts = [" ".join(["good", "movie", "plot", "dull", "story"][i % 5:] + ["fun"] * (i % 3)) for i in range(48)]
    data = _probe(tok, texts)

    def mse() -> float:
        return float(((embed(student, data, tok, desc=False) - embed(teacher, data, tok, desc=False)) ** 2).mean())

    before = mse()
    train(student, data, tok, TrainConfig(epochs=4, lr=1e-3, batch_size=16), teacher=teacher.eval(),
          distill=DistillConfig(), task=task, desc=False)
    assert mse() < 0.5 * before
    s, t = torch.randn(4, 8), torch.randn(4, 8)
    assert float(distill_loss(s, s, None, DistillConfig(loss="cosine"))) == pytest.approx(0.0, abs=1e-6)
    assert float(distill_loss(s, t, None, DistillConfig())) > 0


def test_no_teacher_means_no_loss(st_folder: Path):
    model, tok, _ = get_task("embedding").load_model(str(st_folder), None)
    as_embedder(model, Pooling())
    with pytest.raises(PrunekitError, match="no labels"):
        get_task("embedding").loss(None, {})


def test_prune_structured_and_unstructured_end_to_end(st_folder: Path, tmp_path: Path):
    s = PruneSettings(ffn=0.5, finetune_epochs=1, lr=1e-3, latency=False)
    report = prune(str(st_folder), DATA, tmp_path / "ffn", s, task="embedding")
    assert report["task"] == "embedding" and "recall_at_1" in report["stages"][-1]["metrics"]
    assert report["reload_check"]["sentence_transformers"]["loads"]  # FFN-only: shapes fit the config
    assert set(report["stages"][-1]["metrics"]) >= {"recall_at_1", "mrr_at_10", "mrpc_auc", "mean_cosine"}
    assert (tmp_path / "ffn" / "1_Pooling" / "config.json").is_file()
    heads = prune(str(st_folder), DATA, tmp_path / "heads", PruneSettings(heads=0.5, finetune_epochs=0.5, lr=1e-3,
                  latency=False), task="embedding")
    assert heads["reload_check"]["sentence_transformers"]["loader"] == "prunekit.load"
    assert evaluate(str(tmp_path / "heads"), DATA, task="embedding")["recall_at_1"] == pytest.approx(
        heads["stages"][-1]["metrics"]["recall_at_1"])
    unstructured = prune(str(st_folder), DATA, tmp_path / "u", PruneSettings(sparsity=0.5, finetune_epochs=0.5,
                         lr=1e-3, latency=False), task="embedding")
    assert unstructured["stages"][-1]["sparsity"] > 0.4


def test_cli_end_to_end(st_folder: Path, tmp_path: Path):
    runner = CliRunner()
    common = ["--task", "embedding", "-m", str(st_folder), "--max-eval-samples", "8", "--max-length", "32"]
    result = runner.invoke(app, ["evaluate", *common, "--json"])
    assert result.exit_code == 0, result.output
    assert "recall_at_1" in json.loads(result.stdout[result.stdout.index("{"):])
    result = runner.invoke(app, ["prune", *common, "--max-train-samples", "32", "--ffn", "0.5", "--distill-loss",
                                 "cosine", "--no-latency", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "o" / "report.json").read_text())["settings"]["prune"]["distill_loss"] == "cosine"
    result = runner.invoke(app, ["finetune", "--task", "embedding", "-m", str(st_folder), "-d", "squad",
                                 "--out", str(tmp_path / "f")])
    assert result.exit_code == 2 and "nothing to learn without labels" in result.output
