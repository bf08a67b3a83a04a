"""A damaged file in a model folder is one PrunekitError line naming it, on every load path."""

from __future__ import annotations

import json

import pytest
import torch
from _textnet_zoo import UserCNN, tiny
from typer.testing import CliRunner

import prunekit
from prunekit.cli import app
from prunekit.errors import PrunekitError
from prunekit.io.hf import load_causal_lm, load_classifier, load_tokenizer
from prunekit.io.shapes import save_pruned
from prunekit.io.textnet import MODEL_JSON, SHAPES_JSON, save_textnet
from prunekit.prune.structured import StructuredPlan, apply_plan

LABELS = ["negative", "positive"]


def _damage(path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x00\xff{not json",
                      "list": b"[1, 2, 3]", "empty": b""}[how])


def _one_line_naming(err: pytest.ExceptionInfo, path) -> None:
    message = str(err.value)
    assert isinstance(err.value, PrunekitError) and len(message.splitlines()) == 1
    assert str(path) in message and "damaged or truncated" in message, message


@pytest.mark.parametrize("how", ["truncate", "garbage", "empty"])
@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"])
def test_a_damaged_file_of_a_transformers_folder_is_named(tiny_classifier, name, how):
    _damage(tiny_classifier / name, how)
    with pytest.raises(PrunekitError) as err:
        load_classifier(str(tiny_classifier), LABELS)  # what prune / evaluate / finetune load through
    _one_line_naming(err, tiny_classifier / name)
    if name in ("model.safetensors", "config.json"):
        with pytest.raises(PrunekitError) as err:
            prunekit.load(tiny_classifier)
        _one_line_naming(err, tiny_classifier / name)


def test_a_tokenizer_config_that_is_not_an_object_is_named(tiny_classifier):
    _damage(tiny_classifier / "tokenizer_config.json", "list")  # used to be an AttributeError traceback
    with pytest.raises(PrunekitError) as err:
        load_tokenizer(str(tiny_classifier))
    _one_line_naming(err, tiny_classifier / "tokenizer_config.json")


def test_a_word_vocabulary_that_is_not_text_is_named(tiny_classifier):
    (tiny_classifier / "tokenizer.json").unlink()
    (tiny_classifier / "vocab.txt").write_bytes(b"[PAD]\n[UNK]\n\xff\xfe\x00good\n")
    with pytest.raises(PrunekitError) as err:
        load_tokenizer(str(tiny_classifier))
    _one_line_naming(err, tiny_classifier / "vocab.txt")


@pytest.mark.parametrize("name", ["model.safetensors", "prunekit_shapes.json", "config.json"])
def test_a_damaged_file_of_a_structurally_pruned_folder_is_named(tiny_model, tmp_path, name):
    apply_plan(tiny_model, StructuredPlan(heads={0: [1]}, ffn={1: list(range(40))}))
    save_pruned(tiny_model, None, tmp_path / "m")
    _damage(tmp_path / "m" / name, "truncate")
    with pytest.raises(PrunekitError) as err:
        prunekit.load(tmp_path / "m")
    _one_line_naming(err, tmp_path / "m" / name)


@pytest.mark.parametrize("name", ["model.safetensors", MODEL_JSON])
def test_a_damaged_file_of_a_text_model_folder_is_named(tmp_path, name):
    save_textnet(tiny("gru"), None, tmp_path / "m")
    _damage(tmp_path / "m" / name, "truncate")
    with pytest.raises(PrunekitError) as err:
        prunekit.load(tmp_path / "m")
    _one_line_naming(err, tmp_path / "m" / name)


@pytest.mark.parametrize("how", ["truncate", "list"])
def test_a_damaged_custom_module_manifest_is_named(tmp_path, how):
    torch.manual_seed(0)
    save_textnet(UserCNN(), None, tmp_path / "m")
    _damage(tmp_path / "m" / SHAPES_JSON, how)
    with pytest.raises(PrunekitError) as err:
        prunekit.load(tmp_path / "m", trust_remote_code=True)
    _one_line_naming(err, tmp_path / "m" / SHAPES_JSON)


def test_a_damaged_language_model_is_named(tiny_lm):
    _damage(tiny_lm / "model.safetensors", "truncate")
    with pytest.raises(PrunekitError) as err:
        load_causal_lm(str(tiny_lm))  # what prune_lm / evaluate_lm load through
    _one_line_naming(err, tiny_lm / "model.safetensors")


def test_a_missing_shard_is_named(tiny_classifier):
    index = {"metadata": {}, "weight_map": {"classifier.bias": "model-00002-of-00002.safetensors"}}
    (tiny_classifier / "model.safetensors").rename(tiny_classifier / "model-00001-of-00002.safetensors")
    (tiny_classifier / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(PrunekitError, match="model-00002-of-00002.safetensors") as err:
        load_classifier(str(tiny_classifier), LABELS)
    assert len(str(err.value).splitlines()) == 1


@pytest.mark.parametrize("command", [["inspect", "{m}"], ["evaluate", "-m", "{m}", "-d", "{csv}"]])
def test_the_cli_prints_one_line_naming_the_file_and_exits_2(tiny_classifier, tiny_csv, command):
    _damage(tiny_classifier / "model.safetensors", "truncate")
    args = [a.format(m=tiny_classifier, csv=tiny_csv) for a in command]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(tiny_classifier / "model.safetensors") in lines[0], result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.output
