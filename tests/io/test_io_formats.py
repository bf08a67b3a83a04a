"""The registry of saved formats behind prunekit.load: a format registered anywhere is picked up."""

import importlib
import json
import subprocess
import sys

import pytest
import torch
from torch import nn

import prunekit
from prunekit.errors import PrunekitError
from prunekit.io.formats import format_of, register_format, saved_formats, unregister_format


@pytest.fixture()
def toy_format():
    """A format of a test's own: ``toy.json`` holding a Linear's widths."""

    def load(folder, trust_remote_code):
        shape = json.loads((folder / "toy.json").read_text())
        return nn.Linear(*shape).eval()

    register_format("toy", lambda folder: (folder / "toy.json").is_file(), load, priority=50, looks_for="toy.json")
    yield
    unregister_format("toy")


def test_a_registered_format_is_loaded_by_prunekit_load(toy_format, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "toy.json").write_text("[3, 2]")
    model = prunekit.load(tmp_path / "m")
    assert isinstance(model, nn.Linear) and model.weight.shape == torch.Size([2, 3])
    assert format_of(tmp_path / "m").name == "toy"


def test_formats_are_asked_by_priority_and_a_name_registers_once(toy_format):
    importlib.import_module("prunekit.io.shapes")  # registers structured, packed and the transformers fallback
    names = [f.name for f in saved_formats()]
    assert names.index("toy") < names.index("structured") < names.index("packed") < names.index("transformers")
    register_format("toy", lambda folder: False, lambda folder, trust: nn.Identity(), priority=50)
    assert [f.name for f in saved_formats()].count("toy") == 1


def test_a_folder_no_format_recognises_is_one_line_naming_what_was_looked_for(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PrunekitError) as err:
        prunekit.load(tmp_path / "empty")
    message = str(err.value)
    assert "\n" not in message and "holds no model prunekit can load" in message
    for looked_for in ("prunekit_model.json", "prunekit_quant.json", "prunekit_shapes.json",
                       "model.packed.safetensors", "config.json"):
        assert looked_for in message


def test_a_name_too_long_for_the_filesystem_is_one_line():
    with pytest.raises(PrunekitError, match="not a usable path"):
        prunekit.load("x" * 5000)


def test_an_empty_registry_says_so(monkeypatch, tmp_path):
    from prunekit.io import formats

    monkeypatch.setattr(formats, "_FORMATS", {})
    monkeypatch.setattr(formats, "_builtins_imported", True)  # as if the built-in modules registered elsewhere
    with pytest.raises(PrunekitError, match="no saved format is registered"):
        formats.load_saved(tmp_path)


def test_loading_through_any_module_knows_every_built_in_format(tiny_classifier):
    """``prunekit.io.shapes.load`` (its old name) on a plain transformers folder: the transformers format is
    registered by prunekit.io.hf, which load_saved imports by name, whoever imported what before."""
    code = ("import sys; from prunekit.io.shapes import load; "
            f"m = load({str(tiny_classifier)!r}); print(type(m).__name__, 'prunekit.io.hf' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["BertForSequenceClassification", "True"]
