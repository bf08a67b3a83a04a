import pytest
import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.importance import Magnitude, Movement, RandomImportance, Taylor, Wanda, make_importance


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


def test_wanda_is_abs_w_times_input_norm_with_padding_ignored():
    lin, params = _params()
    imp = Wanda()
    assert Wanda.uses_activations and not Wanda.uses_gradients
    x = torch.arange(24, dtype=torch.float).view(2, 3, 4)  # batch 2, 3 tokens, 4 inputs
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])  # padded tokens must not count
    imp.observe("lin", x, mask)
    real = torch.stack([x[0, 0], x[0, 1], x[1, 0]])
    expected = lin.weight.detach().abs() * real.pow(2).sum(0).sqrt()
    assert torch.allclose(imp.scores(params)["lin"], expected)
    imp.reset()
    with pytest.raises(RuntimeError, match="no calibration"):
        imp.scores(params)


def test_wanda_observes_the_linear_that_owns_each_weight():
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 3)))
    imp = Wanda()
    # keyed by module name (transformers) or by parameter name (text models): the Linear itself,
    # never its parent (whose input differs from the Linear's)
    assert imp.observed(net, {"2.0": net[2][0].weight, "0.weight": net[0].weight}) == {"2.0": net[2][0],
                                                                                       "0.weight": net[0]}
    with pytest.raises(PrunekitError, match="Linear"):
        imp.check(net, {"2": net[2][0].weight})


def test_wanda_refuses_non_linear_weights():
    imp = Wanda()
    imp.observe("lin", torch.ones(2, 4))
    with pytest.raises(PrunekitError, match="Linear"):
        imp.scores({"lin": nn.Parameter(torch.ones(4))})


def test_unknown_method():
    with pytest.raises(PrunekitError, match="unknown pruning method"):
        make_importance("psychic")
