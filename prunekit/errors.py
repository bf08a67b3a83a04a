"""One exception type for every user-facing problem, so the CLI can print one line and exit non-zero."""


class PrunekitError(Exception):
    """A problem with the user's input or environment (not a bug): printed as one line by the CLI."""
