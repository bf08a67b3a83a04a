"""PruneSettings.validate: pure (a normalised copy), the plan read once, and flags that do not apply refused."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

import prunekit.search.plan as plan_module
from prunekit.config import DataOptions, PruneSettings
from prunekit.errors import PrunekitError


def _plan(tmp_path, **kw):
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump({"prunekit_plan": 1, "granularity": "unstructured",
                                    "block_sparsity": [0.3, 0.5], "importance": "taylor", **kw}))
    return str(path)


@pytest.mark.parametrize("kw", [{}, {"method": "wanda"}, {"heads": 0.5}, {"threshold": 0.1, "schedule": "oneshot"},
                                {"learn_structure": True, "budget": "params=0.5"}])
def test_validate_returns_a_normalised_copy_and_leaves_the_input_alone(kw):
    s = PruneSettings(**kw)
    before = copy.deepcopy(s)
    v = s.validate()
    assert v is not s and s == before
    assert v.scope is not None and v.importance is not None
    assert v.validate() == v  # normalising twice changes nothing


def test_validate_resolves_a_plan_on_the_copy_and_reads_the_file_once(tmp_path, monkeypatch):
    reads = []
    real = plan_module.read_plan
    monkeypatch.setattr(plan_module, "read_plan", lambda path: reads.append(path) or real(path))
    s = PruneSettings(plan=_plan(tmp_path))
    v = s.validate()
    assert (v.schedule, v.sparsity, v.importance) == ("oneshot", pytest.approx(0.4), "taylor")
    assert (s.schedule, s.sparsity, s.importance) == ("gradual", None, None)
    for _ in range(3):  # the pipeline asks these again and again
        assert not v.structured and v.plan_granularity == "unstructured"
        assert copy.copy(v).plan_data["block_sparsity"] == [0.3, 0.5]
    assert len(reads) == 1
    assert "_plan" not in v.to_dict() and set(v.to_dict()) == set(PruneSettings().to_dict())


@pytest.mark.parametrize(("kw", "says"), [
    ({"schedule": "oneshot", "ramp_end": 0.3}, "the gradual schedule's cubic ramp (--ramp-end) is not "
                                               "used by --schedule oneshot"),
    ({"schedule": "iterative", "prune_every": 4, "steps": 2}, "ramp (--prune-every) is not used"),
    ({"heads": 0.5, "ramp_end": 0.3}, "not used by structured pruning"),
    ({"distill_alpha": 0.7, "temperature": 4.0}, "without --distill there is no distillation loss for "
                                                 "--distill-alpha, --temperature: add --distill"),
    ({"gqa": "heads", "ffn": 0.5}, "--gqa decides how grouped-query heads are removed: it needs --heads"),
    ({"round_to": 8}, "--round-to rounds the widths structured ratios keep"),
    ({"round_to": 8, "learn_structure": True, "budget": "params=0.5"}, "--learn-structure's gates decide them"),
    ({"layer_importance": "bi", "heads": 0.5}, "--layer-importance ranks the layers --layers removes: add --layers"),
    ({"calib_batches": 4}, "--calib-batches feeds data-driven criteria; --method magnitude scores the weights alone"),
    ({"calib_batches": 4, "heads": 0.5}, "--importance l2 scores the weights alone"),
    ({"max_drop": 1.0, "heads": 0.5}, "--max-drop applies to the unstructured schedules"),
    ({"max_drop": 1.0, "learn_structure": True, "budget": "params=0.5"}, "--max-drop applies to the unstructured"),
    ({"threshold": 0.1, "heads": 0.5}, "in two runs"),
])
def test_flags_that_do_not_apply_are_refused_by_name(kw, says):
    with pytest.raises(PrunekitError, match=re.escape(says)):
        PruneSettings(**kw).validate()


@pytest.mark.parametrize("kw", [
    {"ramp_end": 0.3},  # gradual unstructured: the ramp applies
    {"schedule": "oneshot", "method": "wanda", "calib_batches": 4},
    {"schedule": "oneshot", "method": "sparsegpt", "calib_batches": 4},
    {"schedule": "iterative", "method": "taylor", "calib_batches": 4},
    {"heads": 0.5, "importance": "taylor", "calib_batches": 4},
    {"layers": 1, "calib_batches": 4},  # the default greedy layer ranking runs on calibration batches
    {"layers": 1, "layer_importance": "bi"},
    {"heads": 0.5, "gqa": "heads", "round_to": 2},
    {"units": 0.5, "round_to": 4},
    {"distill": True, "distill_alpha": 0.7, "temperature": 4.0},
    {"schedule": "iterative", "steps": 2, "max_drop": 1.0},
    {"learn_structure": True, "budget": "params=0.5", "calib_batches": 2},  # the gates' warm start reads them
])
def test_flags_that_apply_are_accepted(kw):
    PruneSettings(**kw).validate()


def test_a_structured_plan_takes_round_to_and_gqa(tmp_path):
    path = _plan(tmp_path, granularity="structured", heads={0: 0.5}, ffn={0: 0.5})
    v = PruneSettings(plan=path, round_to=4, gqa="heads").validate()
    assert v.structured and v.scope == "local"


def test_data_options_live_below_the_tasks_and_config_re_exports_them() -> None:
    from prunekit.data.options import DataOptions as Low

    assert DataOptions is Low
