"""Moved to :mod:`prunekit.folders` (below both models and io); the old import path keeps working."""

from prunekit.folders import JSON_OBJECTS, TEXT_FILES, DamagedFileError, find_damaged, names_damaged_file

__all__ = ["JSON_OBJECTS", "TEXT_FILES", "DamagedFileError", "find_damaged", "names_damaged_file"]
