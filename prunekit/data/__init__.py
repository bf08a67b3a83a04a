"""Data loading: labelled text (classes or numeric targets) from built-in names, files, folders or saved
datasets."""

from prunekit.data.classification import ClassificationData, Split, load_classification
from prunekit.data.options import DataOptions
from prunekit.data.regression import RegressionData, load_regression
from prunekit.data.text import read_texts
from prunekit.splits import held_out_split, stratified_split

__all__ = ["ClassificationData", "DataOptions", "RegressionData", "Split", "held_out_split", "load_classification",
           "load_regression", "read_texts", "stratified_split"]
