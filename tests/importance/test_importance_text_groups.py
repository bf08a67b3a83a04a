"""Group criteria on recurrent and conv text models: the same l1/l2/taylor/activation/random as for heads."""

from __future__ import annotations

import pytest
import torch
from _textnet_zoo import RECURRENT_CASES, StackedRNN, batch, one_thread, tiny  # noqa: F401
from torch import nn

from prunekit.importance.groups import group_scores
from prunekit.prune.textnets import text_groups


def _batches():
    b = batch()
    return [{**b, "labels": torch.tensor([0, 1, 2, 0, 1])}]


@pytest.mark.parametrize("criterion", ["l1", "l2", "taylor", "activation", "random"])
@pytest.mark.parametrize("kind", [("lstm", 2, True), ("textcnn", 1, False)])
def test_one_score_per_unit_filter_and_embedding_dim(criterion, kind):
    model = tiny(*kind)
    scores = group_scores(model, criterion, batches=_batches()).units
    groups = text_groups(model)
    assert {g.name: g.count for g in groups} == {n: s.numel() for n, s in scores.items()}
    assert all(torch.isfinite(s).all() and (s >= 0).all() for s in scores.values())


def test_l2_sums_every_gate_row_and_the_consumer_columns_of_a_unit():
    model = tiny("gru", 1, True)
    with torch.no_grad():
        model.rnn.weight_hh_l0_reverse[2 * 10 + 4].fill_(10.0)  # unit 4 of the reverse direction, gate n
    s = group_scores(model, "l2").units
    assert int(s["rnn.l0_reverse"].argmax()) == 4 and float(s["rnn.l0_reverse"][4]) > 10
    assert float(s["rnn.l0"].max()) < 10  # the forward direction is ranked on its own
    with torch.no_grad():
        model.classifier.weight[:, 10 + 7].fill_(50.0)  # the classifier column of reverse unit 7
    assert int(group_scores(model, "l2").units["rnn.l0_reverse"].argmax()) == 7


def test_activation_of_a_dead_unit_and_filter_is_zero():
    model = tiny("lstm", 1, True)
    with torch.no_grad():
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(model.rnn, name)[[3, 13, 23, 33]] = 0.0  # every gate row of forward unit 3
    assert group_scores(model, "activation", batches=_batches()).units["rnn.l0"][3] == 0
    cnn = tiny("textcnn")
    with torch.no_grad():
        cnn.convs[1].weight[2] = 0.0
        cnn.convs[1].bias[2] = -1.0
    assert group_scores(cnn, "activation", batches=_batches()).units["convs.1"][2] == 0


def test_a_users_module_is_scored_too():
    torch.manual_seed(0)
    model = StackedRNN()
    for criterion in ("l2", "activation", "random"):
        scores = group_scores(model, criterion, batches=_batches()).units
        assert {n: s.numel() for n, s in scores.items()} == {"embedding": 12, "first.l0": 9, "second.l0": 7,
                                                              "second.l0_reverse": 7}


CELLS = {"lstm": nn.LSTMCell, "gru": nn.GRUCell, "rnn": nn.RNNCell}


def _mean_abs_states(model, b) -> dict[str, torch.Tensor]:
    """Reference: every layer and direction stepped one token at a time with *Cell modules over each text's
    real tokens only (reverse directions from its last real token); mean |h_t| per unit."""
    rnn, kind = model.rnn, model.config.model_type
    sums, count = {}, 0
    for ids, mask in zip(b["input_ids"], b["attention_mask"], strict=True):
        x = model.embedding(ids[: int(mask.sum())])
        count += x.shape[0]
        for layer in range(rnn.num_layers):
            outs = []
            for d, sfx in enumerate(["", "_reverse"][: 2 if rnn.bidirectional else 1]):
                cell = CELLS[kind](x.shape[1], rnn.hidden_size, **({"nonlinearity": rnn.nonlinearity}
                                                                     if kind == "rnn" else {}))
                for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(cell, w).data.copy_(getattr(rnn, f"{w}_l{layer}{sfx}"))
                state, hs = None, []
                for t in (x.flip(0) if d else x):
                    state = cell(t[None], state)
                    hs.append((state[0] if kind == "lstm" else state)[0])
                h = torch.stack(hs).flip(0) if d else torch.stack(hs)
                name = f"rnn.l{layer}{sfx}"
                sums[name] = sums.get(name, 0) + h.abs().sum(0)
                outs.append(h)
            x = torch.cat(outs, 1)
    return {n: s / count for n, s in sums.items()}


@pytest.mark.parametrize("kind", RECURRENT_CASES)
@torch.no_grad()
def test_activation_is_mean_abs_hidden_state_of_every_layer_and_direction(kind):
    model = tiny(*kind)
    scores = group_scores(model, "activation", batches=_batches()).units
    want = _mean_abs_states(model, batch())
    assert set(want) == {n for n in scores if n != "embedding"}
    for name, ref in want.items():
        assert torch.allclose(scores[name], ref, atol=1e-5), name


def test_activation_of_a_users_stacked_rnn_follows_its_real_inputs():
    torch.manual_seed(0)
    model = StackedRNN().eval()
    b = batch()
    scores = group_scores(model, "activation", batches=[b]).units
    with torch.no_grad():  # the module runs unpacked over padding; scores weigh real tokens only
        x, _ = model.first(model.emb(b["input_ids"]))
        y, _ = model.second(x)
    m = b["attention_mask"].float()[..., None]
    assert torch.allclose(scores["first.l0"], (x.abs() * m).sum((0, 1)) / m.sum(), atol=1e-6)
    assert torch.allclose(scores["second.l0_reverse"], (y[..., 7:].abs() * m).sum((0, 1)) / m.sum(), atol=1e-6)
