"""Sensitivity analysis: one unit at a time, every ratio, cached and resumable, JSON + plot."""

from __future__ import annotations

import json

import pytest
from _plain import plain_metrics

from prunekit.config import DataOptions
from prunekit.errors import PrunekitError
from prunekit.search.api import SearchData, sensitivity
from prunekit.search.sensitivity import SensitivityTable, parse_ratios, run_sensitivity


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize(("granularity", "units", "ratios"), [
    ("heads", ["layer.0.heads", "layer.1.heads"], {"0.5"}),  # 2 heads: at most one goes
    ("ffn", ["layer.0.ffn", "layer.1.ffn"], {"0.2969", "0.7031"}),  # whole neurons of 64
    ("layers", ["layer.0", "layer.1"], {"1"}),
    ("unstructured", ["block.0", "block.1"], {"0.3", "0.7"}),
])
def test_each_granularity_measures_every_unit(trained_tiny, tmp_path, granularity, units, ratios):
    clf, csv = trained_tiny
    out = tmp_path / "sens"
    table = sensitivity(str(clf), DataOptions(str(csv)), out, granularity=granularity, ratios="0.3,0.7",
                        opts=SearchData(importance="l2"))
    assert table["units"] == units
    assert {u: set(v) for u, v in table["values"].items()} == {u: ratios for u in units}
    assert table["metric"] == "accuracy"
    assert table["baseline"] == pytest.approx(100 * plain_metrics(clf, DataOptions(str(csv)), split="validation")
                                              ["accuracy"], abs=1e-9)  # the unmasked model, measured apart
    assert json.loads((out / "sensitivity.json").read_text())["values"] == table["values"]
    assert (out / "sensitivity.png").stat().st_size > 1000 and "| unit |" in (out / "report.md").read_text()


def test_removing_a_whole_layer_hurts_more_than_a_few_neurons(trained_tiny, tmp_path):
    clf, csv = trained_tiny
    layers = sensitivity(str(clf), DataOptions(str(csv)), tmp_path / "a", granularity="layers",
                         opts=SearchData(importance="l2"))
    ffn = sensitivity(str(clf), DataOptions(str(csv)), tmp_path / "b", granularity="ffn", ratios="0.1",
                      opts=SearchData(importance="l2"))
    worst_layer = min(v["1"] for v in layers["values"].values())
    assert worst_layer <= min(v for u in ffn["values"].values() for v in u.values())


class CountingProbe:
    metric, higher_is_better, identity = "accuracy", True, {"x": 1}

    def __init__(self, fail_after: int | None = None) -> None:
        from prunekit.search.budget import Unit

        self.calls, self.fail_after = 0, fail_after
        self._units = [Unit(f"u{i}", "ffn", i, 10, 100, 100, 0.9) for i in range(3)]

    def units(self, granularity):
        return self._units

    def measure(self, ratios):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt
        return 90.0 - 10 * sum(ratios.values())


def test_interrupted_run_resumes_from_the_cache(tmp_path):
    cache = tmp_path / "c.json"
    with pytest.raises(KeyboardInterrupt):
        run_sensitivity(CountingProbe(fail_after=4), "ffn", [0.2, 0.4], cache=cache)
    partial = SensitivityTable.from_dict(json.loads(cache.read_text()))
    assert sum(len(v) for v in partial.values.values()) == 3  # baseline + 3 measurements were saved
    probe = CountingProbe()
    table = run_sensitivity(probe, "ffn", [0.2, 0.4], cache=cache)
    assert probe.calls == 3  # only what was missing
    assert table.values["u2"] == {"0.2": pytest.approx(88.0), "0.4": pytest.approx(86.0)}
    again = CountingProbe()
    run_sensitivity(again, "ffn", [0.2, 0.4], cache=cache)
    assert again.calls == 0
    assert table.delta("u0", 0.3) == pytest.approx(-3.0)  # interpolated between measured ratios


def test_lm_sensitivity_per_block(tiny_lm, tiny_text, tmp_path):
    table = sensitivity(str(tiny_lm), str(tiny_text), tmp_path / "lm", granularity="unstructured", ratios="0.5,0.9",
                        opts=SearchData(task="lm", seq_len=16, lm_calib_samples=4, lm_eval_windows=2))
    assert table["metric"] == "perplexity" and table["units"] == ["block.0", "block.1"]
    assert all(v["0.9"] != pytest.approx(table["baseline"], rel=1e-6) for v in table["values"].values())  # masked


@pytest.mark.parametrize(("text", "match"), [("0.1,abc", "comma-separated"), ("0,0.5", r"\(0, 1\]"), ("", "fractions")])
def test_bad_ratios(text, match):
    with pytest.raises(PrunekitError, match=match):
        parse_ratios(text)


def test_lm_granularity_must_be_per_block(tiny_lm, tiny_text, tmp_path):
    with pytest.raises(PrunekitError, match="per-block unstructured"):
        sensitivity(str(tiny_lm), str(tiny_text), tmp_path / "lm", granularity="heads",
                    opts=SearchData(task="lm", seq_len=16, lm_calib_samples=4, lm_eval_windows=2))
    assert not (tmp_path / "lm").exists()
