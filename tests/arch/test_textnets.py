"""The text-model table and the tracer: which modules are embedding / stack / convs / classifier."""

from __future__ import annotations

import pytest
import torch
from _textnet_zoo import StackedRNN, UserCNN, WithNorm, one_thread, tiny  # noqa: F401
from torch import nn

from prunekit.arch import is_text_model, text_layout
from prunekit.errors import PrunekitError
from prunekit.prune.textnets import TextPlan, apply_text_plan


def test_builtin_models_come_from_the_table(tiny_model):
    layout = text_layout(tiny("gru", 2, True))
    assert layout.family == "recurrent" and [n for n, _ in layout.recurrent] == ["rnn"]
    assert layout.feature_width == 20 and layout.classifier[0] == "classifier"
    layout = text_layout(tiny("textcnn"))
    assert layout.family == "textcnn" and [n for n, _ in layout.convs] == ["convs.0", "convs.1", "convs.2"]
    assert is_text_model(tiny("rnn")) and not is_text_model(tiny_model)


def test_custom_modules_are_traced_in_data_flow_order():
    layout = text_layout(StackedRNN())
    assert layout.family == "traced" and layout.embedding[0] == "emb"
    assert [n for n, _ in layout.recurrent] == ["first", "second"] and layout.classifier[0] == "out"
    assert [n for n, _ in text_layout(UserCNN()).convs] == ["convs.0", "convs.1"]


class Swapped(StackedRNN):
    """Registers first/second but runs second's width chain wrong: traced widths do not chain."""

    def __init__(self) -> None:
        super().__init__()
        self.second = nn.LSTM(12, 7, batch_first=True, bidirectional=True)


class RunsTwice(UserCNN):
    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids).transpose(1, 2)
        y = torch.relu(self.convs[0](x)).amax(2)
        return self.fc(torch.cat([y, torch.relu(self.convs[1](x)).amax(2)[:, :3], y[:, :3]], 1))


class Projected(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.lstm = nn.LSTM(4, 6, proj_size=3)
        self.fc = nn.Linear(3, 2)


@pytest.mark.parametrize(("build", "layer", "why"), [
    (WithNorm, "norm", "LayerNorm"),
    (Swapped, "second", "input_size 12 is not the width 9"),
    (Projected, "lstm", "proj_size"),
])
def test_what_cannot_be_traced_is_refused_naming_the_layer(build, layer, why):
    with pytest.raises(PrunekitError, match=rf"cannot trace layer '{layer}'.*{why}"):
        text_layout(build())


def test_a_forward_that_does_not_follow_the_layout_is_refused_before_anything_changes():
    model = RunsTwice()
    text_layout(model)  # each layer runs once, widths chain: only pruning can tell
    before = {n: p.clone() for n, p in model.state_dict().items()}
    plan = TextPlan({"convs.0": [0, 1, 2, 3], "convs.1": [0, 1, 2]})
    with pytest.raises(PrunekitError, match="trace RunsTwice"):
        apply_text_plan(model, plan)
    assert all(torch.equal(before[n], p) for n, p in model.state_dict().items())
