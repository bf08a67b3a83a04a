"""mkdocs hook: show the Sphinx roles in prunekit's docstrings (:func:`x`, :mod:`x`, ...) as plain code.

The docstrings are written for Sphinx-style readers; mkdocstrings leaves the role name in front of the
code span (":func:`load`" renders as ":func:load"), which reads as noise on the API pages.
"""

from __future__ import annotations

import re

ROLE = re.compile(r":(?:py:)?(?:func|meth|mod|class|data|attr|obj|exc):(?=<code>)")


def on_page_content(html: str, page, config, files) -> str:  # noqa: ARG001 - mkdocs hook signature
    """Drop the role prefix before each code span on API reference pages."""
    if not page.file.src_uri.startswith("reference/api/"):
        return html
    return ROLE.sub("", html)
