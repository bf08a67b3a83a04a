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
    with pytest.raises(PrunekitError, match="--trust-remote-code"):  # the folder's class runs only on opt-in
        prunekit.load(tmp_path / "m")
    rebuilt = prunekit.load(tmp_path / "m", trust_remote_code=True)  # from the recorded path, no kwargs
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
        prunekit.load(tmp_path / "m", trust_remote_code=True)
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
        prunekit.load(tmp_path / "m", trust_remote_code=True)
    again = load_custom(tmp_path / "m", "cwd_net_for_test:Net")
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(again(input_ids=ids).logits, net(ids))
    monkeypatch.delitem(sys.modules, "cwd_net_for_test", raising=False)


EVIL_SOURCE = '''
from pathlib import Path

Path(__file__).with_name("RAN-" + __name__).write_text("imported")
''' + NET_SOURCE


def _saved_naming(tmp_path, module: str, folder_name: str = "m"):
    """A custom module's folder whose manifest names ``module`` (as a downloaded, edited folder could)."""
    torch.manual_seed(0)
    folder = tmp_path / folder_name
    save_textnet(UserCNN(), None, folder)
    record = json.loads((folder / SHAPES_JSON).read_text())
    (folder / SHAPES_JSON).write_text(json.dumps({**record, "module": module}))
    return folder


@pytest.mark.parametrize("trust", [False, True])
@pytest.mark.parametrize("entry", ["", "cwd"])
@pytest.mark.parametrize("where", ["working folder", "model folder"])
def test_a_manifest_never_imports_a_file_from_the_working_or_the_model_folder(tmp_path, monkeypatch, where, entry,
                                                                              trust):
    """`python -c`, the REPL and Jupyter put '' (the working folder) first on sys.path; a folder naming a
    module that sits in the working folder or in the model folder itself must not make prunekit run it,
    not even with trust_remote_code (which trusts installed code, not files lying about)."""
    import sys

    name = f"evil_{where.split()[0]}_{entry or 'empty'}_{trust}"
    folder = _saved_naming(tmp_path, f"{name}:Net")
    work = folder if where == "model folder" else tmp_path / "work"
    work.mkdir(exist_ok=True)
    (work / f"{name}.py").write_text(EVIL_SOURCE)
    monkeypatch.chdir(work)
    monkeypatch.setattr(sys, "path", ["" if entry == "" else str(work), *sys.path])
    monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(PrunekitError, match="--trust-remote-code" if not trust else "cannot import") as err:
        prunekit.load("." if where == "model folder" else folder, trust_remote_code=trust)
    assert len(str(err.value).splitlines()) == 1
    assert name not in sys.modules and not (work / f"RAN-{name}").exists()
    assert sys.path[0] == ("" if entry == "" else str(work))  # the search path is restored


@pytest.mark.parametrize("module", ["this:X", "prunekit_evil_for_test:Net"])
def test_a_manifest_naming_an_installed_module_imports_nothing_without_opt_in(tmp_path, monkeypatch, capsys,
                                                                              module):
    """`this:X` used to print the Zen of Python; and prunekit's own classes are allowed by exact name,
    not by a prefix that `prunekit_evil_for_test` would pass."""
    import sys

    site = tmp_path / "site"
    site.mkdir()
    (site / "prunekit_evil_for_test.py").write_text(EVIL_SOURCE)
    monkeypatch.syspath_prepend(str(site))
    mod_name = module.partition(":")[0]
    monkeypatch.delitem(sys.modules, mod_name, raising=False)
    folder = _saved_naming(tmp_path, module)
    with pytest.raises(PrunekitError, match=r"names the class .* pass --trust-remote-code \(trust_remote_code=True\)"):
        prunekit.load(folder)
    assert mod_name not in sys.modules and not list(site.glob("RAN-*"))
    assert "Beautiful is better" not in capsys.readouterr().out


def test_with_opt_in_a_class_installed_on_the_path_loads(tmp_path, monkeypatch):
    import sys

    from prunekit.models.custom import import_class

    site = tmp_path / "site"
    site.mkdir()
    (site / "legit_net_for_test.py").write_text(NET_SOURCE)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "legit_net_for_test", raising=False)
    torch.manual_seed(0)
    net = import_class("legit_net_for_test:Net")()
    save_textnet(net, None, tmp_path / "m")
    del sys.modules["legit_net_for_test"]
    with pytest.raises(PrunekitError, match="--trust-remote-code"):
        prunekit.load(tmp_path / "m")
    assert "legit_net_for_test" not in sys.modules
    again = prunekit.load(tmp_path / "m", trust_remote_code=True)
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(again(input_ids=ids).logits, net(ids))
    monkeypatch.delitem(sys.modules, "legit_net_for_test", raising=False)


def test_prunekits_own_classes_are_allowed_by_exact_name_only(tmp_path):
    from prunekit.models import TextCNN
    from prunekit.models.custom import import_recorded_class

    record = tmp_path / SHAPES_JSON
    assert import_recorded_class("prunekit.models:TextCNN", record) is TextCNN
    assert import_recorded_class("prunekit.models.textcnn.TextCNN", record) is TextCNN
    for name in ("prunekit.models.custom:TextModuleAdapter", "prunekit.models.textcnn:nn", "prunekit_x.models:TextCNN"):
        with pytest.raises(PrunekitError, match="--trust-remote-code"):
            import_recorded_class(name, record)
