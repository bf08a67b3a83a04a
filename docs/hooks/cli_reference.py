"""mkdocs hook: render every `prunekit` command's --help into the CLI reference page at build time.

The page is generated from the CLI itself, so it cannot drift from the code: a renamed flag or a new
command shows up in the next build without anyone copying help text.
"""

from __future__ import annotations

from mkdocs.exceptions import PluginError

PAGE = "reference/cli.md"
MARKER = "<!-- cli-reference -->"
COLUMNS = 80  # a standard terminal: what users see


def _help(app, args: list[str]) -> str:
    """One command's --help as the terminal shows it (rich panels), trailing blanks removed."""
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, [*args, "--help"], prog_name="prunekit",
                                env={"COLUMNS": str(COLUMNS), "TERM": "dumb", "NO_COLOR": "1"})
    if result.exit_code != 0:
        raise PluginError(f"`prunekit {' '.join(args)} --help` exited with {result.exit_code}: {result.output}")
    lines = [line.rstrip() for line in result.output.splitlines()]
    return "\n".join(lines).strip("\n")


def render() -> str:
    """Markdown for the whole CLI: the top-level help, then one section per command."""
    try:
        import typer

        from prunekit.cli import app
    except ImportError as err:  # prunekit must be importable (make setup installs it)
        raise PluginError(f"the CLI reference needs prunekit importable: {err}") from err
    group = typer.main.get_command(app)
    parts = ["## `prunekit`", "", "```text", _help(app, []), "```", ""]
    for name in group.commands:
        parts += [f"## `prunekit {name}`", "", "```text", _help(app, [name]), "```", ""]
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 - mkdocs hook signature
    """Replace the marker on the CLI page with the generated reference; leave other pages alone."""
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise PluginError(f"{PAGE} lost its {MARKER} marker")
    return markdown.replace(MARKER, render())


