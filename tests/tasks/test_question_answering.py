"""Question answering pieces: strided windows with the answer in the second window, best-span decoding on
hand-made logits, the SQuAD metric on the official script's behaviour, distillation, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from prunekit.data.squad import QAExample, QASplit
from prunekit.errors import PrunekitError
from prunekit.report.metrics import normalize_answer, squad_f1, squad_metrics
from prunekit.tasks import get_task
from prunekit.tasks.question_answering import QAEncoded, best_span, decode, distill_loss, encode_windows
from prunekit.train.distill import DistillConfig

MINILM = Path.home() / ".cache/prunekit/assets/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def tok():
    if not MINILM.is_dir():
        pytest.skip("all-MiniLM-L6-v2 asset not built")
    return AutoTokenizer.from_pretrained(MINILM)


def _long_example() -> QAExample:
    filler = " ".join(["word"] * 40)
    context = f"{filler} The treasure lies in Zanzibar today."
    return QAExample("q", "Where is the treasure?", context, [("Zanzibar", context.index("Zanzibar"))])


def test_answer_in_second_window_gets_its_tokens_first_window_cls(tok) -> None:
    enc = encode_windows(QASplit([_long_example()], doc_stride=8), tok, max_length=32)
    assert len(enc) >= 2 and set(enc.example_of) == {0}
    assert enc.labels[0] == (0, 0)  # not in the first window: the [CLS] index
    s, e = enc.labels[-1]
    assert s > 0 and tok.decode(enc.features[-1]["input_ids"][s : e + 1]) == "zanzibar"


def test_long_context_without_stride_is_refused(tok) -> None:
    with pytest.raises(PrunekitError, match="longer than 32 tokens and --doc-stride is 0"):
        encode_windows(QASplit([_long_example()], doc_stride=0), tok, max_length=32)


def test_best_span_respects_order_length_and_context() -> None:
    offsets = [None, None, (0, 3), (4, 7), (8, 11), (12, 15)]
    start = np.array([9.0, 0, -9, -9, 5, 0])  # [CLS] (index 0) is the top start but not in the context
    end = np.array([9.0, 0, 8, -9, -9, 1])  # the top pair (4, 2) ends before it starts: not a span
    assert best_span(start, end, offsets, max_answer_length=30) == (5.0 + 1.0, 8, 15)
    assert best_span(start, end, offsets, max_answer_length=1) == (1.0, 12, 15)


def test_decode_takes_the_best_window_of_each_example() -> None:
    ctx = "abc def ghi"
    ex = QAExample("q", "?", ctx, [("def", 4)])
    offsets = [[None, (0, 3), (4, 7)], [None, (4, 7), (8, 11)]]
    logits = np.full((2, 3, 2), -5.0, dtype=np.float32)
    logits[0, 1] = [1.0, 1.0]  # window 0: "abc", score 2
    logits[1, 2] = [3.0, 3.0]  # window 1: "ghi", score 6
    data = QAEncoded([{}, {}], [(0, 0), (0, 0)], [0, 0], offsets, [ex])
    assert decode(data, logits) == ["ghi"]


def test_squad_metric_official_examples() -> None:
    assert normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert normalize_answer("an apple, a pear") == "apple pear"
    assert squad_f1("Denver Broncos", "The Denver Broncos") == 1.0
    assert squad_f1("the Broncos won", "Denver Broncos") == 0.5  # "broncos won" vs "denver broncos"
    m = squad_metrics(["Denver Broncos", "Carolina"], [["Denver Broncos", "The Broncos"], ["Panthers"]])
    assert m == {"exact_match": 0.5, "f1": 0.5}


def test_distill_loss_is_zero_kl_for_identical_logits_and_ce_weighted_by_alpha() -> None:
    torch.manual_seed(0)
    s = torch.randn(3, 7, 2)
    labels = torch.tensor([[1, 2], [0, 0], [3, 5]])
    cfg = DistillConfig(alpha=0.0)
    assert float(distill_loss(s, s, labels, cfg)) == pytest.approx(0.0, abs=1e-6)
    assert float(distill_loss(s, s.flip(1), labels, cfg)) > 0
    assert float(distill_loss(s, s, labels, DistillConfig(alpha=1.0))) > 0


def test_registered_with_f1_primary() -> None:
    task = get_task("question-answering")
    assert task.metric == "f1" and task.metric_scale == 100.0
