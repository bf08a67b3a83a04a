"""A model folder on disk: where a spec points (:func:`locate`), its tokenizer, and which file is damaged.

It sits with :mod:`prunekit.assets`, below both :mod:`prunekit.models` (a text net can reuse a folder's
tokenizer) and :mod:`prunekit.io` (which loads whole models), so both open folders the same way.

Damaged files: one clear line naming the file when a model folder is damaged (truncated weights, garbage JSON, ...).

transformers, safetensors and tokenizers fail on a broken file with their own exception types and long
tracebacks that rarely say which file was broken (a truncated ``model.safetensors`` gave 54 lines of
``SafetensorError``). The few load functions are wrapped with :func:`names_damaged_file`: when one fails for
any reason, the folder's files are checked (:func:`find_damaged`, only then, so loading stays as fast) and a
damaged one becomes a :class:`DamagedFileError` that names it; any other failure passes through unchanged.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from prunekit.assets import resolve_model
from prunekit.errors import PrunekitError, first_line

F = TypeVar("F", bound=Callable[..., Any])

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

#: JSON documents of a model folder that must each hold one JSON object (prunekit_*.json are added)
JSON_OBJECTS = ("config.json", "generation_config.json", "model.safetensors.index.json", "tokenizer_config.json",
                "special_tokens_map.json", "added_tokens.json", "vocab.json", "tokenizer.json")
#: plain-text tokenizer files (WordPiece vocabulary, BPE merges)
TEXT_FILES = ("vocab.txt", "merges.txt")


class DamagedFileError(PrunekitError):
    """A file of a model folder cannot be read: truncated, not the format its name says, or garbage."""


def find_damaged(folder: str | Path) -> tuple[Path, str] | None:
    """The first file of ``folder`` that cannot be read, with the reason in a few words; None if all read.
    Configs and manifests first (they decide what is loaded), then the tokenizer, then the weights."""
    folder = Path(folder)
    names = [*JSON_OBJECTS[:2], *sorted(p.name for p in folder.glob("prunekit_*.json")), *JSON_OBJECTS[2:]]
    for name in names:
        path = folder / name
        if path.is_file() and (why := _json_problem(path)):
            return path, why
    if (folder / "tokenizer.json").is_file() and (why := _tokenizer_problem(folder / "tokenizer.json")):
        return folder / "tokenizer.json", why
    for name in TEXT_FILES:
        path = folder / name
        if path.is_file() and (why := _read_text(path)[1]):
            return path, why
    for path in sorted(folder.glob("*.safetensors")):
        if why := _safetensors_problem(path):
            return path, why
    return _missing_shard(folder)


def _json_problem(path: Path) -> str | None:
    text, why = _read_text(path)
    if text is None:
        return why
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        return f"not valid JSON ({err.msg} at line {err.lineno} column {err.colno})"
    return None if isinstance(doc, dict) else f"holds a JSON {type(doc).__name__}, not an object"


def _tokenizer_problem(path: Path) -> str | None:
    from tokenizers import Tokenizer

    try:
        Tokenizer.from_file(str(path))
    except Exception as err:  # noqa: BLE001 - tokenizers raises a bare Exception for a malformed file
        return f"not a tokenizers file ({first_line(err)})"
    return None


def _read_text(path: Path) -> tuple[str | None, str | None]:
    """(the file's text, None), or (None, why it cannot be read as UTF-8 text)."""
    try:
        return path.read_bytes().decode("utf-8"), None
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except OSError as err:
        return None, f"cannot be read ({first_line(err)})"


def _safetensors_problem(path: Path) -> str | None:
    """The header must parse and cover the file exactly (what a truncated download breaks)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            f.keys()
    except Exception as err:  # noqa: BLE001 - SafetensorError is not exported under a stable name
        return f"not a complete safetensors file ({first_line(err)})"
    return None


def _missing_shard(folder: Path) -> tuple[Path, str] | None:
    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        return None
    weight_map = json.loads(index.read_text()).get("weight_map")
    if not isinstance(weight_map, dict):
        return index, "has no weight_map"
    missing = sorted({str(f) for f in weight_map.values() if not (folder / str(f)).is_file()})
    return (index, f"names shards that are not in the folder: {', '.join(missing[:3])}") if missing else None


def _folder_of(spec: Any) -> Path | None:
    """The local folder a model spec (path, built-in name) means, or None (a hub id, nothing there)."""
    if spec is None:
        return None
    try:
        path = Path(resolve_model(str(spec))).expanduser()
    except Exception:  # noqa: BLE001 - a spec that does not resolve is the wrapped function's error to report
        return None
    return path if path.is_dir() else None


def names_damaged_file(arg: str) -> Callable[[F], F]:
    """Wrap a load function whose parameter ``arg`` names the model folder: if it raises and a file of that
    folder is damaged, raise one :class:`DamagedFileError` line naming the file instead."""

    def wrap(fn: F) -> F:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except DamagedFileError:
                raise
            except Exception as err:
                try:
                    folder = _folder_of(signature.bind_partial(*args, **kwargs).arguments.get(arg))
                    found = find_damaged(folder) if folder is not None else None
                except Exception:  # noqa: BLE001 - the check must never hide the original error
                    found = None
                if found is None:
                    raise
                path, why = found
                raise DamagedFileError(f"{path} is damaged or truncated: {why}") from err

        return wrapper  # type: ignore[return-value]

    return wrap


def locate(spec: str) -> str:
    """A local folder, a built-in asset name, or a hub id; anything else is a clear error."""
    resolved = resolve_model(spec)
    path = Path(resolved).expanduser()
    try:
        exists = path.exists()
    except OSError as err:  # e.g. a name longer than the filesystem allows
        raise PrunekitError(f"model {spec[:80]!r}: not a usable path ({err.strerror})") from None
    if exists:
        if not path.is_dir():  # e.g. -m runs/x/config.json: "no config.json" would be a riddle
            folder = f" ({path.parent})" if (path.parent / "config.json").is_file() else ""
            raise PrunekitError(f"model {spec!r} is a file; give the model folder{folder}")
        if not (path / "config.json").exists():
            raise PrunekitError(f"model {spec!r}: {path} is not a Hugging Face model folder (no config.json)")
        return str(path)
    if spec.startswith((".", "/", "~")) or not _HUB_ID.match(spec):
        raise PrunekitError(f"model {spec!r}: no such folder")
    return spec  # a hub id: transformers fetches it when online


@names_damaged_file("where")
def load_tokenizer(where: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    try:
        return AutoTokenizer.from_pretrained(where, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise PrunekitError(f"model {where!r}: cannot load its tokenizer ({first_line(err)})") from err
