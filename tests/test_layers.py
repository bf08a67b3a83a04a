"""prunekit's layers stay honest: import-linter (``.importlinter``, ``lint-imports`` in ``make test``) checks
imports against the layers, and imports of prunekit's own modules sit at the top of a module. One placed inside
a function lets a cycle survive (Python only trips over a cycle at import time), so their number may only go
down; and every top-level module of prunekit must be placed in a layer."""

from __future__ import annotations

import ast
import configparser
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "prunekit"
#: function-level imports of prunekit's own modules today, outside :data:`EXEMPT` (199 before the layers were
#: drawn): lower it, never raise it
LIMIT = 2
#: modules whose imports inside functions are deliberate, with the reason
EXEMPT = {"prunekit.cli": "keeps `prunekit --help` fast: a command imports the API only when it runs"}


def _module(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _target(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not node.level:
        return [node.module or ""]
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - node.level + 1]
    return [".".join(base + ([node.module] if node.module else []))]


def function_level_imports(package: Path = PACKAGE) -> list[str]:
    """``module:line -> target`` for every import of the package's own modules inside a function body."""
    name = package.name
    found = []
    for path in sorted(package.rglob("*.py")):
        module = _module(path, package.parent)
        for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    for target in _target(node, module, path.name == "__init__.py"):
                        if target == name or target.startswith(name + "."):
                            found.append(f"{module}:{node.lineno} -> {target}")
    return sorted(set(found))


def test_function_level_imports_of_prunekit_stay_below_the_limit() -> None:
    found = [f for f in function_level_imports() if f.partition(":")[0] not in EXEMPT]
    assert len(found) <= LIMIT, (
        f"{len(found)} imports of prunekit's own modules inside functions (limit {LIMIT}): put them at the top "
        "of the module, moving code to the layer it belongs to if that makes a cycle:\n" + "\n".join(found))


def test_the_count_sees_nested_and_relative_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "prunekit"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from prunekit.errors import X  # top level: fine\n")
    (pkg / "sub" / "mod.py").write_text(
        "import numpy\n"
        "def f():\n    from prunekit.a import b\n    import numpy\n"
        "class C:\n    def m(self):\n        if True:\n            from .. import c\n"
        "        from . import d\n")
    assert function_level_imports(pkg) == ["prunekit.sub.mod:3 -> prunekit.a", "prunekit.sub.mod:8 -> prunekit",
                                           "prunekit.sub.mod:9 -> prunekit.sub"]


def test_every_top_level_module_has_a_layer() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    layers = config["importlinter:contract:layers"]["layers"]
    named = {name.strip() for line in layers.splitlines() if not line.strip().startswith("#")
             for name in line.replace("|", ":").split(":") if name.strip()}
    children = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    children |= {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert children == named, f"not in a layer: {sorted(children - named)}; no such module: {sorted(named - children)}"


@pytest.mark.parametrize(("low", "high"), [
    ("prunekit.importance", "prunekit.prune"),  # a criterion never knows how a weight is removed
    ("prunekit.tasks", "prunekit.config"),  # tasks read data.options.DataOptions, below the settings
    ("prunekit.io.shapes", "prunekit.io.hf"),  # hf registers the plain transformers format itself
    ("prunekit.prune.solvers", "prunekit.prune.oneshot"),  # the engine runs the solvers, not the reverse
    ("prunekit.importance.registry", "prunekit.importance.base"),  # criteria register; the registry is below
])
def test_the_lower_side_of_a_former_cycle_reaches_nothing_above_it(low: str, high: str) -> None:
    graph = _graph()
    assert not graph.find_shortest_chains(importer=low, imported=high, as_packages=True), (
        f"{low} imports {high} again (directly or through other modules): a cycle lint-imports refuses")


_GRAPH: list[grimp.ImportGraph] = []


def _graph() -> grimp.ImportGraph:
    """prunekit's import graph, built once per test session."""
    if not _GRAPH:
        _GRAPH.append(grimp.build_graph("prunekit"))
    return _GRAPH[0]
