import pytest

from prunekit.errors import PrunekitError
from prunekit.schedule import check_schedule, cubic_sparsity, iterative_targets


def test_cubic_ramps_from_zero_to_final_and_is_front_loaded():
    vals = [cubic_sparsity(t, 100, 0.9, end=0.7) for t in range(101)]
    assert vals[0] == 0.0
    assert vals[70] == pytest.approx(0.9) and vals[100] == pytest.approx(0.9)
    assert all(b >= a for a, b in zip(vals, vals[1:], strict=False))
    # cubic: more than half of the target is reached in the first third of the ramp
    assert vals[23] > 0.45 * 1.0


def test_iterative_targets():
    assert iterative_targets(0.9, 3) == pytest.approx([0.3, 0.6, 0.9])
    assert iterative_targets(0.5, 1) == [0.5]
    with pytest.raises(PrunekitError):
        iterative_targets(0.5, 0)


def test_movement_needs_gradual():
    with pytest.raises(PrunekitError, match="gradual"):
        check_schedule("oneshot", True, "movement")
    check_schedule("gradual", True, "movement")
    with pytest.raises(PrunekitError, match="unknown schedule"):
        check_schedule("weekly", False, "magnitude")


def test_weight_updating_solvers_refuse_gradual():
    with pytest.raises(PrunekitError, match="sparsegpt .* use --schedule oneshot or iterative"):
        check_schedule("gradual", False, "sparsegpt", solves=True)
    check_schedule("oneshot", False, "sparsegpt", solves=True)
    check_schedule("iterative", False, "sparsegpt", solves=True)
