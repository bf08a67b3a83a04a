"""Token classification end to end on a tiny BERT and synthetic CoNLL data: metrics on a hand case, head
refusals, distillation over scored tokens, and finetune → prune --heads/--ffn --distill → reload through the CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FILL, NEG, POS, _config, _tokenizer
from transformers import AutoModelForTokenClassification, BertForSequenceClassification, BertModel
from typer.testing import CliRunner

from prunekit import load
from prunekit.cli import app
from prunekit.data.tokens import IGNORE, load_tokens
from prunekit.errors import PrunekitError
from prunekit.report.metrics import token_metrics
from prunekit.tasks import get_task
from prunekit.tasks.token_classification import distill_loss, encode
from prunekit.train.distill import DistillConfig

runner = CliRunner()


def conll(path: Path, n: int = 200, seed: int = 0) -> Path:
    """Sentences where 'good'/'great' words open a POS entity (continued by the next positive word) and negative
    words are NEG entities: learnable from the word alone by a tiny model."""
    rng = random.Random(seed)
    lines = ["-DOCSTART- -X- -X- O", ""]
    for _ in range(n):
        for w in rng.sample(FILL + POS[:3] + NEG[:3], 6):
            tag = "B-POS" if w in POS else "B-NEG" if w in NEG else "O"
            lines.append(f"{w} X X {tag}")
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def test_seqeval_strict_entity_scores_on_a_hand_case():
    true = [["B-PER", "I-PER", "O", "B-LOC"]]
    pred = [["B-PER", "O", "O", "B-LOC"]]  # the person's end is wrong: only LOC counts
    m = token_metrics(true, pred, 0.5)
    assert (m["precision"], m["recall"], m["f1"], m["token_accuracy"]) == (0.5, 0.5, 0.5, 0.75)


def test_first_sub_token_alignment_through_the_tokenizer(tmp_path):
    tok = _tokenizer(tmp_path)
    tok.add_tokens(["x"])
    data = load_tokens(str(conll(tmp_path / "d.txt", 20)))
    enc = encode(data.train, tok, 32)
    first = enc.labels[0]
    assert first[0] == IGNORE and first[-1] == IGNORE
    assert [x for x in first if x != IGNORE] == data.train.labels[0]


def test_distillation_ignores_unscored_tokens():
    cfg = DistillConfig(alpha=0.0, temperature=1.0)
    s = torch.zeros(1, 3, 2)
    t = torch.tensor([[[5.0, -5.0], [0.0, 0.0], [0.0, 0.0]]])
    assert distill_loss(s, t, torch.tensor([[IGNORE, 0, 1]]), cfg).item() == pytest.approx(0.0)
    assert distill_loss(s, t, torch.tensor([[0, IGNORE, IGNORE]]), cfg).item() > 0.1


def test_a_sequence_classifier_is_refused_and_a_token_classifier_not_made_a_sentence_classifier(tmp_path):
    tok = _tokenizer(tmp_path)
    seq = tmp_path / "seq"
    BertForSequenceClassification(_config(tok.vocab_size)).save_pretrained(seq)
    tok.save_pretrained(seq)
    data = load_tokens(str(conll(tmp_path / "d.txt", 20)))
    with pytest.raises(PrunekitError, match="needs an encoder: a bare model or a \\*ForTokenClassification"):
        get_task("token-classification").load_model(str(seq), data)
    tagger = tmp_path / "tagger"
    AutoModelForTokenClassification.from_config(_config(tok.vocab_size)).save_pretrained(tagger)
    tok.save_pretrained(tagger)
    with pytest.raises(PrunekitError, match="token classification"):
        get_task("classification").load_model(str(tagger), data)


def test_finetune_prune_heads_ffn_distill_and_reload_through_the_cli(tmp_path):
    data = conll(tmp_path / "train.txt")
    enc = tmp_path / "enc"
    tok = _tokenizer(enc)
    torch.manual_seed(0)
    BertModel(_config(tok.vocab_size)).save_pretrained(enc)
    tok.save_pretrained(enc)
    common = ["-d", str(data), "--task", "token-classification", "--max-length", "16"]
    result = runner.invoke(app, ["finetune", "-m", str(enc), *common, "--out", str(tmp_path / "f"), "--epochs", "6",
                                 "--lr", "3e-3", "--batch-size", "8", "--no-latency"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "f" / "report.json").read_text())
    assert report["task"] == "token-classification" and report["reload_check"]["same_predictions"]
    assert report["stages"][-1]["metrics"]["f1"] > 0.8, report["stages"][-1]["metrics"]
    result = runner.invoke(app, ["evaluate", "-m", str(tmp_path / "f"), *common, "--json"])
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.output[result.output.index("{"):])) == {"f1", "precision", "recall",
                                                                         "token_accuracy", "loss"}
    out = tmp_path / "p"
    result = runner.invoke(app, ["prune", "-m", str(tmp_path / "f"), *common, "--heads", "0.5", "--ffn", "0.5",
                                 "--finetune-epochs", "1", "--distill", "--no-latency", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["stages"][-1]["metrics"]["f1"] > 0.5 and report["reload_check"]["same_predictions"]
    # one of two heads left (head size 16 ≠ hidden/heads) needs prunekit's loader; the dense tagger reloads plainly
    assert report["reload_check"]["loader"] == "prunekit.load"
    model = load(str(out))
    assert model.config.intermediate_size == 32 and type(model).__name__ == "BertForTokenClassification"
    task = get_task("token-classification")
    split = task.encode(load_tokens(str(data)).test, tok, 16)
    plain = AutoModelForTokenClassification.from_pretrained(tmp_path / "f")
    assert task.same_predictions(task.predict(plain, split, tok), task.predict(plain, split, tok))
    assert np.isfinite(task.predict(model, split, tok)).all()
