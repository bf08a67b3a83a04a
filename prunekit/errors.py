"""One exception type for every user-facing problem, so the CLI can print one line and exit non-zero."""


class PrunekitError(Exception):
    """A problem with the user's input or environment (not a bug): printed as one line by the CLI."""


def shown(value: object, limit: int = 60) -> str:
    """A value quoted in an error line: its repr (one line: newlines are escaped), cut to ``limit`` characters."""
    item = getattr(value, "item", None)  # numpy scalars as plain numbers: 5, not np.int64(5)
    text = repr(item() if callable(item) and getattr(value, "ndim", None) == 0 else value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def printable(text: str) -> str:
    """``text`` with line breaks and other unprintable characters escaped, so an error stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty), for a one-line
    error that quotes what a library said."""
    text = str(err).strip()
    return text.splitlines()[0].strip() if text else type(err).__name__
