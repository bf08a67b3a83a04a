"""Pruned text models saved as safetensors + a small JSON reload with identical outputs."""

from __future__ import annotations

import json

import pytest
import torch
from _textnet_zoo import StackedRNN, UserCNN, batch, one_thread, tiny  # noqa: F401

import prunekit
from prunekit.errors import PrunekitError
from prunekit.importance.groups import group_scores
from prunekit.io.textnet import MODEL_JSON, SHAPES_JSON, load_custom, load_into, save_textnet
from prunekit.models import build_vocab_tokenizer
from prunekit.prune.textnets import apply_text_plan, text_plan_from_ratios


def _prune(model, **ratios):
    return apply_text_plan(model, text_plan_from_ratios(model, group_scores(model, "l2").units, **ratios))


@pytest.mark.parametrize("kind", [("lstm", 2, True), ("gru", 1, False), ("textcnn", 1, False)])
def test_pruned_model_reloads_with_identical_outputs(tmp_path, kind):
    model = _prune(tiny(*kind), units=0.5 if kind[0] != "textcnn" else 0, filters=0.5 if kind[0] == "textcnn" else 0,
                   embedding=0.25)
    tok = build_vocab_tokenizer(["a b a b"], min_freq=1)
    save_textnet(model, tok, tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").is_file() and (tmp_path / "m" / "tokenizer.json").is_file()
    saved = json.loads((tmp_path / "m" / MODEL_JSON).read_text())
    assert saved["embed_dim"] == 9
    again = prunekit.load(tmp_path / "m")
    b = batch()
    assert torch.equal(again(**b).logits, model(**b).logits)


@pytest.mark.parametrize("build", [StackedRNN, UserCNN])
def test_a_custom_module_reloads_into_a_fresh_instance(tmp_path, build):
    torch.manual_seed(0)
    model = _prune(build(), embedding=0.25, **({"units": 0.5} if build is StackedRNN else {"filters": 0.5}))
    save_textnet(model, None, tmp_path / "m")
    again = load_into(build(), tmp_path / "m")
    ids = batch()["input_ids"]
    assert torch.equal(again(ids), model(ids))
    rebuilt = prunekit.load(tmp_path / "m")  # from the recorded import path (_textnet_zoo:...), no kwargs
    assert isinstance(rebuilt, build) and torch.equal(rebuilt(input_ids=ids).logits, model(ids))
    with pytest.raises(PrunekitError, match="was saved from a module"):
        load_into(UserCNN() if build is StackedRNN else StackedRNN(), tmp_path / "m")


def test_weights_that_do_not_match_the_config_are_refused(tmp_path):
    save_textnet(tiny("lstm"), None, tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / MODEL_JSON).read_text())
    cfg["hidden_size"] = 4
    (tmp_path / "m" / MODEL_JSON).write_text(json.dumps(cfg))
    with pytest.raises(PrunekitError, match="do not match"):
        prunekit.load(tmp_path / "m")


def test_a_module_that_cannot_be_imported_by_name_needs_module(tmp_path):
    class Local(UserCNN):  # defined inside a function: no import path to record
        pass

    torch.manual_seed(0)
    save_textnet(Local(), None, tmp_path / "m")
    assert json.loads((tmp_path / "m" / SHAPES_JSON).read_text())["module"] is None
    with pytest.raises(PrunekitError, match="pass --module"):
        prunekit.load(tmp_path / "m")
    assert isinstance(load_custom(tmp_path / "m", "_textnet_zoo:UserCNN"), UserCNN)


NET_SOURCE = '''
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.rnn, self.out = nn.Embedding(30, 8), nn.GRU(8, 6, batch_first=True), nn.Linear(6, 2)

    def forward(self, ids):
        return self.out(self.rnn(self.emb(ids))[0].amax(1))
'''


def test_a_recorded_import_path_is_never_looked_up_in_the_working_folder(tmp_path, monkeypatch):
    """--module may import from the working folder; a path recorded in a saved folder may not (a folder you
    downloaded and cd into must not make prunekit run a file sitting beside it)."""
    import sys

    from prunekit.models.custom import import_class

    (tmp_path / "cwd_net_for_test.py").write_text(NET_SOURCE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "cwd_net_for_test", raising=False)
    with pytest.raises(PrunekitError, match="cannot import 'cwd_net_for_test'"):
        import_class("cwd_net_for_test:Net", from_cwd=False)
    net = import_class("cwd_net_for_test:Net")()  # an explicit --module looks in the working folder
    save_textnet(net, None, tmp_path / "m")
    assert json.loads((tmp_path / "m" / SHAPES_JSON).read_text())["module"] == "cwd_net_for_test:Net"
    del sys.modules["cwd_net_for_test"]
    with pytest.raises(PrunekitError, match="put it on PYTHONPATH or pass --module"):
        prunekit.load(tmp_path / "m")
    again = load_custom(tmp_path / "m", "cwd_net_for_test:Net")
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(again(input_ids=ids).logits, net(ids))
    monkeypatch.delitem(sys.modules, "cwd_net_for_test", raising=False)
