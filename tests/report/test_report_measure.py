import time

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification
from transformers.pytorch_utils import Conv1D

from prunekit.errors import PrunekitError
from prunekit.io.packed import dense_size_bytes
from prunekit.report.measure import (
    bert_like_inputs,
    count_params,
    measure_latency,
    sparsity_by_module,
    stage_record,
)

CONFIG = dict(
    vocab_size=64,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=64,
)


def tiny_bert():
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(**CONFIG, num_labels=2)).eval()


def test_count_params_counts_zeros_and_tied_weights_once():
    emb, lin = nn.Embedding(10, 8), nn.Linear(8, 10)
    lin.weight = emb.weight  # tied: 80 shared + 10 bias
    with torch.no_grad():
        lin.bias.zero_()
        emb.weight[:5] = 0
    assert count_params(nn.Sequential(emb, lin)) == (90, 40)

    # two distinct Parameter objects over the same storage still count once
    shared = torch.randn(4, 4)
    a, b = nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False)
    a.weight, b.weight = nn.Parameter(shared), nn.Parameter(shared)
    assert count_params(nn.Sequential(a, b)) == (16, 16)


def test_count_params_on_tied_bert():
    model = BertForMaskedLM(BertConfig(**CONFIG))
    total, nonzero = count_params(model)
    naive = sum(t.numel() for k, t in model.state_dict().items() if k.endswith(("weight", "bias")))
    assert total == naive - 64 * 32 - 64  # decoder weight/bias are the word embedding/prediction bias
    assert 0 < nonzero <= total


def test_sparsity_by_module_default_and_named():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2), Conv1D(6, 4))
    with torch.no_grad():
        model[0].weight[:2] = 0
        model[3].weight.zero_()
    assert sparsity_by_module(model) == {"0": 0.5, "2": 0.0, "3": 1.0}
    assert sparsity_by_module(model, ["2"]) == {"2": 0.0}
    with pytest.raises(PrunekitError):
        sparsity_by_module(model, ["1"])


def test_sparsity_by_module_bert_order():
    names = list(sparsity_by_module(tiny_bert()))
    assert names[0] == "bert.encoder.layer.0.attention.self.query"
    assert names[-2:] == ["bert.pooler.dense", "classifier"]
    assert len(names) == 2 * 6 + 2


class Slowed(nn.Module):
    """``model`` plus a fixed sleep per call: a runner known to be at least ``ms`` slower."""

    def __init__(self, model: nn.Module, ms: float) -> None:
        super().__init__()
        self.model, self.ms = model, ms

    def forward(self, **inputs):
        time.sleep(self.ms / 1000)
        return self.model(**inputs)


def test_latency_is_in_ms_orders_runners_and_restores_state():
    model = tiny_bert().train()
    threads = torch.get_num_threads()
    lat = measure_latency(model, bert_like_inputs(64), seq_len=16, repeats=3, threads=1)
    assert set(lat) == {"batch_1", "batch_32"}
    assert model.training and torch.get_num_threads() == threads
    slow = measure_latency(Slowed(model, 30.0), bert_like_inputs(64), seq_len=16, repeats=3, threads=1)
    for key, ms in slow.items():  # a sleep only lengthens a call: ≥ 30 ms whatever the load
        assert ms >= 30.0 and ms > lat[key], (key, ms, lat[key])


def test_latency_fixed_repeats_counts_calls():
    calls = []

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)

        def forward(self, x):
            calls.append(x.shape[0])
            assert not self.training and torch.is_inference_mode_enabled()
            return self.lin(x)

    lat = measure_latency(Probe(), lambda b, s: {"x": torch.ones(b, 2)}, batch_sizes=(3,), warmup=1, repeats=4)
    assert calls == [3] * 5 and list(lat) == ["batch_3"]
    calls.clear()
    measure_latency(Probe(), lambda b, s: {"x": torch.ones(b, 2)}, batch_sizes=(1,), warmup=0, min_seconds=10)
    assert len(calls) == 50  # capped


def test_bert_like_inputs_are_reproducible():
    make = bert_like_inputs(100, token_type_ids=False)
    a, b = make(2, 8), make(2, 8)
    assert set(a) == {"input_ids", "attention_mask"}
    assert torch.equal(a["input_ids"], b["input_ids"]) and int(a["input_ids"].max()) < 100
    assert set(bert_like_inputs(100)(1, 4)) == {"input_ids", "attention_mask", "token_type_ids"}


def test_stage_record_fields():
    model = tiny_bert()
    prunable = ["bert.encoder.layer.0.intermediate.dense"]
    with torch.no_grad():
        model.get_submodule(prunable[0]).weight.zero_()
    metrics = {"accuracy": 0.5}
    rec = stage_record(
        "baseline",
        metrics=metrics,
        model=model,
        seconds=1.5,
        latency={"batch_1": 2.0},
        extra={"prunable_modules": prunable, "step": 3},
    )
    assert list(rec) == [
        "name",
        "metrics",
        "params_total",
        "params_nonzero",
        "sparsity",
        "size_bytes",
        "size_compressed_bytes",
        "latency_ms",
        "seconds",
        "step",
    ]
    assert rec["sparsity"] == 1.0  # only over the prunable module
    assert rec["params_total"] - rec["params_nonzero"] >= 32 * 64
    assert rec["size_bytes"] == dense_size_bytes(model.state_dict())
    assert rec["size_compressed_bytes"] < rec["size_bytes"]
    overall = stage_record("x", metrics=metrics, model=model, seconds=0, latency=None)["sparsity"]
    assert overall == pytest.approx(1 - rec["params_nonzero"] / rec["params_total"]) and 0 < overall < 0.5
    with pytest.raises(ValueError):
        stage_record("x", metrics=metrics, model=model, seconds=0, latency=None, extra={"sparsity": 1})


def test_peak_memory_sees_a_temporary_allocation():
    import time

    from prunekit.report.measure import PeakMemory

    with PeakMemory(interval=0.005) as mem:
        big = torch.ones(64 * 1024 * 1024 // 4)  # 64 MB, touched
        time.sleep(0.05)
        del big
    assert mem.extra_bytes >= 32 * 1024 * 1024
    assert mem.record()["peak_rss_bytes"] >= mem.start_bytes
