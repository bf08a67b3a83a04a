"""Where every benchmark's table goes: ``bench/results/<name>.{md,json}``, written atomically (an
interrupted run never leaves half a table), with the package versions under the table, and printed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prunekit.io.atomic import write_json_atomic, write_text_atomic
from prunekit.report.render import package_versions

RESULTS = Path(__file__).resolve().parent / "results"


def versions_line() -> str:
    return f"Versions: {json.dumps(package_versions())}"


def write_results(name: str, lines: list[str], payload: dict[str, Any], *, versions: bool = True) -> None:
    """Write the Markdown ``lines`` (plus a versions line unless the script wrote its own) and ``payload``."""
    lines = [*lines, "", versions_line(), ""] if versions else [*lines, ""]
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text_atomic(RESULTS / f"{name}.md", "\n".join(lines))
    write_json_atomic(RESULTS / f"{name}.json", payload)
    print("\n".join(lines))
