"""The prune step engine (prunekit.steps): the loop and the recipe stages run the same step, and no module
reaches into another's private names (the step logic used to be copied through pipeline's privates)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from prunekit.config import DataOptions, PruneSettings
from prunekit.errors import PrunekitError
from prunekit.pipeline import open_workbench, prune
from prunekit.prune import MaskSet
from prunekit.recipe import run_recipe
from prunekit.steps import Ratios, calibration_batches, check_solver, structured_step, unstructured_method

PACKAGE = Path(__file__).resolve().parents[1] / "prunekit"


def private_imports(package: Path = PACKAGE) -> list[str]:
    """``module:line name`` for every ``from prunekit.x import _name`` (or relative) in the package."""
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            if not (node.level or (node.module or "").split(".")[0] == package.name):
                continue
            found += [f"{path.relative_to(package.parent)}:{node.lineno} {a.name}" for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")]
    return found


def test_no_module_imports_another_modules_private_names():
    assert private_imports() == []


def test_the_private_import_check_sees_them(tmp_path):
    pkg = tmp_path / "prunekit"
    pkg.mkdir()
    (pkg / "a.py").write_text("from prunekit.pipeline import _calibration_batches, open_workbench\n"
                              "from .b import _x as y\nfrom prunekit import __version__\n")
    assert private_imports(pkg) == ["prunekit/a.py:1 _calibration_batches", "prunekit/a.py:2 _x"]


def _recipe_and_loop(clf: Path, csv: Path, tmp_path: Path, stage: dict, settings: PruneSettings):
    """The weights after a recipe's prune stage and after `prune`'s one-shot step with the same settings."""
    run_recipe({"model": str(clf), "data": {"data": str(csv)}, "latency": {"rounds": 0}, "stages": [{"prune": stage}]},
               tmp_path / "recipe")
    prune(str(clf), DataOptions(str(csv)), tmp_path / "loop", settings)
    return (load_file(str(tmp_path / "recipe" / "stages" / "01-prune" / "model.safetensors")),
            load_file(str(tmp_path / "loop" / "model.safetensors")))


def test_recipe_prune_stage_and_the_loop_share_the_unstructured_step(trained_tiny, tmp_path):
    """Wanda (calibration passes, its own row scope) with a calibration batch size of 16: the same masks."""
    clf, csv = trained_tiny
    stage = {"sparsity": 0.5, "method": "wanda", "calib_batches": 2, "batch_size": 16}
    settings = PruneSettings(sparsity=0.5, method="wanda", schedule="oneshot", calib_batches=2, batch_size=16,
                             finetune_epochs=0, latency=False)
    recipe, loop = _recipe_and_loop(clf, csv, tmp_path, stage, settings)
    linears = [n for n in loop if ".encoder.layer." in n and n.endswith(".weight") and loop[n].dim() == 2]
    assert len(linears) == 12
    for name in linears:
        assert float((loop[name] == 0).float().mean()) == pytest.approx(0.5, abs=0.01), name
        assert torch.equal(recipe[name], loop[name]), name


def test_recipe_prune_stage_and_the_loop_share_the_structured_step(trained_tiny, tmp_path):
    """Taylor-ranked heads and FFN neurons on batches of 16: the same cut, the same weights."""
    clf, csv = trained_tiny
    stage = {"heads": 0.5, "ffn": 0.5, "importance": "taylor", "calib_batches": 2, "batch_size": 16}
    settings = PruneSettings(heads=0.5, ffn=0.5, importance="taylor", calib_batches=2, batch_size=16,
                             finetune_epochs=0, latency=False)
    recipe, loop = _recipe_and_loop(clf, csv, tmp_path, stage, settings)
    assert recipe.keys() == loop.keys()
    assert loop["bert.encoder.layer.0.intermediate.dense.weight"].shape[0] == 32  # half of 64
    for name in loop:
        assert torch.equal(recipe[name], loop[name]), name


def test_calibration_batches_are_seeded_and_on_the_models_device(trained_tiny):
    clf, csv = trained_tiny
    wb = open_workbench(str(clf), DataOptions(str(csv)))
    a, b, c = (calibration_batches(wb, 3, 8, seed) for seed in (0, 0, 1))
    assert len(a) == 3 and all(len(batch["input_ids"]) == 8 for batch in a)
    assert all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, c, strict=True))
    assert a[0]["input_ids"].device == next(wb.model.parameters()).device


def test_structured_step_cuts_and_reports_shapes(trained_tiny):
    clf, csv = trained_tiny
    wb = open_workbench(str(clf), DataOptions(str(csv)))
    plan, shapes = structured_step(wb, Ratios(heads=0.5, layers=1), criterion="l2", layer_criterion=None,
                                   scope="local", round_to=1, seed=0, calib_batches=2, batch_size=8)
    assert shapes["num_layers"] == 1 and [layer["q_heads"] for layer in shapes["layers"]] == [1]
    assert plan.layers is not None and len(plan.layers) == 1


def test_a_solver_refuses_weights_outside_the_blocks(tiny_model):
    from prunekit.arch import prunable_weights

    params = prunable_weights(tiny_model, r"classifier")
    with pytest.raises(PrunekitError, match="narrow --prunable"):
        check_solver(tiny_model, params, "sparsegpt")
    with pytest.raises(PrunekitError, match="narrow --prunable"):
        unstructured_method(tiny_model, params, "sparsegpt", 0)
    assert unstructured_method(tiny_model, prunable_weights(tiny_model), "magnitude", 0) is not None
    assert MaskSet(params).masks == {}
