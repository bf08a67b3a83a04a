"""Data loading: labelled text (classes or numeric targets) from built-in names, files, folders or saved
datasets."""

from prunekit.data.classification import (
    ClassificationData,
    Split,
    held_out_split,
    load_classification,
    stratified_split,
)
from prunekit.data.regression import RegressionData, load_regression
from prunekit.data.text import read_texts

__all__ = ["ClassificationData", "RegressionData", "Split", "held_out_split", "load_classification",
           "load_regression", "read_texts", "stratified_split"]
