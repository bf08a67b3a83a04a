"""Data loading: text-classification datasets from built-in names, files, folders or saved datasets."""

from prunekit.data.classification import (
    ClassificationData,
    Split,
    load_classification,
    stratified_split,
)
from prunekit.data.text import read_texts

__all__ = ["ClassificationData", "Split", "load_classification", "read_texts", "stratified_split"]
