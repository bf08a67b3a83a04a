"""Reading prunekit's own small documents: versioned JSON manifests and YAML files (recipes, plans).

One place for the checks every reader needs — the file exists, parses, is a mapping, carries the
format and version this prunekit understands — so each failure is the same single clear line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from prunekit.errors import PrunekitError


def read_versioned_json(path: Path, fmt: str, version: int, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """A prunekit JSON manifest (read from ``path``, or the given copy of it), checked for format and
    version so that a folder from another tool or a newer prunekit fails with one clear line."""
    if data is None:
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise PrunekitError(f"{path} is not valid JSON ({err})") from err
    if data.get("format") != fmt or data.get("version") != version:
        raise PrunekitError(f"{path}: unsupported format {data.get('format')!r} "
                            f"version {data.get('version')!r} (this prunekit reads {fmt} {version})")
    return data


def read_yaml(path: str | Path, what: str) -> Any:
    """The parsed YAML document at ``path``; ``what`` ("recipe", "plan file") names it in errors.
    Always ``yaml.safe_load``: a recipe or plan from elsewhere must not run code."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise PrunekitError(f"{what} {p} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise PrunekitError(f"{what} {p} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset "
                            f"{err.start}): save it as UTF-8") from None
    except OSError as err:
        raise PrunekitError(f"cannot read {what} {p}: {err.strerror or err}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise PrunekitError(f"{what} {p} is not valid YAML: {_yaml_problem(err)}") from None


def _yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one line (the CLI prints exactly one): where, then what."""
    mark, problem = getattr(err, "problem_mark", None), getattr(err, "problem", None)
    problem = problem or (str(err).strip().splitlines() or [type(err).__name__])[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem
