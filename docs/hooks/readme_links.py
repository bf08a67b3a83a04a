"""mkdocs hook: fail the build when the README links to a file that does not exist.

The README is the front page on GitHub but not a page of this site, so mkdocs's own link check never
sees it; its links into docs/ would otherwise break silently when a page moves.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.exceptions import PluginError

LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)\s]*)?\)")


def broken_links(readme: Path) -> list[str]:
    """Relative link targets in ``readme`` that are not files or folders beside it."""
    targets = LINK.findall(readme.read_text(encoding="utf-8"))
    return [t for t in targets if "://" not in t and not t.startswith("mailto:") and not (readme.parent / t).exists()]


def on_pre_build(config) -> None:
    """Check README.md next to mkdocs.yml before anything is built."""
    readme = Path(config.config_file_path).parent / "README.md"
    bad = broken_links(readme)
    if bad:
        raise PluginError(f"README.md links to missing files: {', '.join(bad)}")
