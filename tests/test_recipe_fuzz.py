"""Property-based fuzzing of recipe validation (``parse_recipe`` + ``check_recipe`` and ``prunekit run --check``):
random YAML documents, mutations of the shipped recipes and random stage option values must either validate
or fail with a PrunekitError of one line — never another exception, never a traceback from the CLI."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prunekit.errors import PrunekitError
from prunekit.recipe import STAGES, TOP_KEYS, LatencyOptions, parse_recipe

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

#: every key a recipe may hold anywhere, so random documents often reach the deeper checks
KNOWN_KEYS = sorted({*TOP_KEYS, *STAGES, "name", "data", "text_columns", "label_column", "max_length",
                     *(f.name for cls in (*STAGES.values(), LatencyOptions) for f in fields(cls))})

scalars = (st.none() | st.booleans() | st.integers() | st.integers(-3, 300) | st.floats()
           | st.floats(-2, 2) | st.text(max_size=12) | st.sampled_from(KNOWN_KEYS) | st.dates())
keys = st.sampled_from(KNOWN_KEYS) | st.text(max_size=8) | st.integers() | st.none() | st.booleans()
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
                      max_leaves=12)


def _assert_clean(call) -> Any:
    """``call()``'s result, or None when it raised a one-line PrunekitError (anything else fails the test)."""
    try:
        return call()
    except PrunekitError as err:
        assert "\n" not in str(err) and str(err).strip(), repr(str(err))
    return None


def _dump(tmp_path: Path, doc: Any) -> Path:
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    return path


@FUZZ
@given(doc=values)
def test_random_documents(doc: Any) -> None:
    if isinstance(doc, dict):
        _assert_clean(lambda: parse_recipe(doc))


@FUZZ
@given(doc=st.fixed_dictionaries({"model": scalars, "stages": values},
                                 optional={k: values for k in TOP_KEYS if k not in ("model", "stages")}))
def test_random_recipe_shaped_documents(doc: dict[str, Any]) -> None:
    _assert_clean(lambda: parse_recipe(doc))


@FUZZ
@given(text=st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
       raw=st.binary(max_size=200))
def test_random_files(tmp_path: Path, text: str, raw: bytes) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _assert_clean(lambda: parse_recipe(path))
    path.write_bytes(raw)  # random bytes: not UTF-8 at all, mostly
    _assert_clean(lambda: parse_recipe(path))


def _paths(doc: Any, path: tuple = ()) -> list[tuple]:
    """Every node's path (keys and indices from the root), the root included."""
    children = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    return [path, *(p for k, v in children for p in _paths(v, (*path, k)))]


def _other_type(value: Any) -> st.SearchStrategy[Any]:
    """Random values whose type differs from ``value``'s (an int for a mapping, a list for a float...)."""
    return values.filter(lambda v: type(v) is not type(value))


def _mutate(data: st.DataObject, doc: Any) -> Any:
    """``doc`` with one change at a node picked uniformly: its value replaced by one of another type, the node
    dropped from its parent, or (in a mapping or list) a key or entry added."""
    doc = copy.deepcopy(doc)
    path = data.draw(st.sampled_from(_paths(doc)))
    if not path:
        return data.draw(_other_type(doc))
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    node = parent[path[-1]]
    action = data.draw(st.sampled_from(["replace", "replace", "drop", "add"]))
    if action == "drop":
        del parent[path[-1]]
    elif action == "add" and isinstance(node, dict):
        node[data.draw(keys)] = data.draw(values)
    elif action == "add" and isinstance(node, list):
        node.insert(data.draw(st.integers(0, len(node))), data.draw(values))
    else:
        parent[path[-1]] = data.draw(_other_type(node))
    return doc


@FUZZ
@given(data=st.data(), recipe=st.sampled_from(RECIPES), n=st.integers(1, 3))
def test_mutated_shipped_recipes(tmp_path: Path, data: st.DataObject, recipe: Path, n: int) -> None:
    doc = yaml.safe_load(recipe.read_text())
    for _ in range(n):
        doc = _mutate(data, doc)
    _assert_clean(lambda: parse_recipe(doc if isinstance(doc, dict) else _dump(tmp_path, doc)))


def _options(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    """Random values for a random subset of a stage's own keys: mostly the right type, often out of range."""
    typed = {"float": st.floats(-1, 3) | st.floats(), "int": st.integers(-3, 40), "bool": st.booleans(),
             "str": st.sampled_from(["l2", "taylor", "global", "local", "row", "magnitude", "wanda", "sparsegpt",
                                     "random", "(", "encoder", "*", ""]) | st.text(max_size=6),
             "list": st.lists(st.integers(-2, 12), max_size=5)}

    def value(type_name: str) -> st.SearchStrategy[Any]:
        right = next((s for t, s in typed.items() if type_name.startswith(t)), values)
        return right | st.none() | values

    return st.fixed_dictionaries({}, optional={f.name: value(str(f.type)) for f in fields(STAGES[kind])})


stage = st.sampled_from(sorted(STAGES)).flatmap(lambda kind: _options(kind).map(lambda opts: {kind: opts}))


@FUZZ
@given(stages=st.lists(stage, min_size=1, max_size=4),
       latency=st.fixed_dictionaries({}, optional={f.name: st.integers(-1, 5) | values
                                                   for f in fields(LatencyOptions)}),
       data=st.fixed_dictionaries({"data": st.just("d.csv")},
                                  optional={"text_columns": st.lists(st.text(max_size=3), max_size=3) | values,
                                            "label_column": st.text(max_size=3) | values,
                                            "max_length": st.integers(-1, 600) | values,
                                            "max_train_samples": st.integers(-1, 9) | values}))
def test_random_option_values(stages: list[dict[str, Any]], latency: dict[str, Any], data: dict[str, Any]) -> None:
    recipe = _assert_clean(lambda: parse_recipe({"model": "m", "data": data, "latency": latency,
                                                 "stages": [{"prune": {"heads": 0.5}}, *stages]}))
    if recipe is not None:  # what validated is what runs: typed values, json-able report
        json.dumps(recipe.to_dict())
        for st_ in recipe.stages:
            for f in fields(st_.settings):
                v = getattr(st_.settings, f.name)
                assert v is None or str(f.type).split("[")[0].split(" ")[0] in ("float", "int", "bool", "str", "list")


@pytest.fixture(scope="module")
def tiny_model_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A config-only classifier folder: all that ``run --check`` reads. The hub is offline meanwhile: a random
    ``model`` or ``teacher`` string can look like a hub id, and each would wait ~25 s for the network."""
    import huggingface_hub.constants
    from transformers import BertConfig

    folder = tmp_path_factory.mktemp("fuzz-model")
    BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
               architectures=["BertForSequenceClassification"]).save_pretrained(folder)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        yield folder


@settings(FUZZ, max_examples=60)
@given(data=st.data(), recipe=st.sampled_from(RECIPES))
def test_cli_check_prints_one_line(tiny_model_folder: Path, tmp_path_factory: pytest.TempPathFactory,
                                   data: st.DataObject, recipe: Path) -> None:
    from typer.testing import CliRunner

    from prunekit.cli import app

    doc = _mutate(data, {**yaml.safe_load(recipe.read_text()), "model": str(tiny_model_folder)})
    path = _dump(tmp_path_factory.mktemp("fuzz-check"), doc)
    result = CliRunner().invoke(app, ["run", str(path), "--check"])
    assert result.exit_code in (0, 2), (doc, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), (doc, result.exception)
    if result.exit_code == 2:
        assert result.output.count("\n") == 1 and result.output.startswith("error: "), result.output
