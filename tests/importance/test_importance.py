import pytest
import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.importance import Magnitude, Movement, RandomImportance, Taylor, make_importance


def _params():
    torch.manual_seed(0)
    lin = nn.Linear(4, 3)
    return lin, {"lin": lin.weight}


def test_magnitude_is_abs_weight():
    _, params = _params()
    assert torch.equal(Magnitude().scores(params)["lin"], params["lin"].detach().abs())


def test_random_is_seeded_and_fresh_each_call():
    _, params = _params()
    a, b = RandomImportance(3), RandomImportance(3)
    first = a.scores(params)["lin"]
    assert torch.equal(first, b.scores(params)["lin"])
    assert not torch.equal(first, a.scores(params)["lin"])
    assert not torch.equal(first, RandomImportance(4).scores(params)["lin"])


def test_taylor_accumulates_abs_w_times_grad_over_batches():
    lin, params = _params()
    imp = Taylor()
    expected = torch.zeros_like(lin.weight)
    for i in range(3):
        lin.zero_grad()
        lin(torch.full((2, 4), float(i + 1))).sum().backward()
        expected += (lin.weight * lin.weight.grad).abs()
        imp.accumulate(params)
    assert torch.allclose(imp.scores(params)["lin"], expected)
    imp.reset()
    with pytest.raises(RuntimeError):
        imp.scores(params)


def test_movement_rewards_weights_moving_away_from_zero():
    lin, params = _params()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -1.0, 1.0, -1.0]] * 3))
    lin.weight.grad = torch.tensor([[-1.0, 1.0, 1.0, -1.0]] * 3)  # SGD moves w by -grad
    imp = Movement()
    imp.accumulate(params)
    s = imp.scores(params)["lin"][0]
    assert s[0] > 0 and s[1] > 0  # growing in magnitude
    assert s[2] < 0 and s[3] < 0  # shrinking towards zero
    assert Movement.needs_training and not Movement.reset_after_prune


def test_unknown_method():
    with pytest.raises(PrunekitError, match="unknown pruning method"):
        make_importance("psychic")
