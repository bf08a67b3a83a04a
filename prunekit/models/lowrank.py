"""A Linear layer factorised into two thinner ones (:mod:`prunekit.quant.lowrank` makes them), and the
shapes manifest's half of it: which modules are low-rank with what rank, and rebuilding them blank.

It is a kind of module a saved model may hold, so it sits with the models, below :mod:`prunekit.io`, which
records and rebuilds it.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from prunekit.errors import PrunekitError


class LowRankLinear(nn.Module):
    """y = up(down(x)): ``down`` (in → rank, no bias) then ``up`` (rank → out, with the original bias)."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=bias)

    @property
    def weight(self) -> Tensor:
        """The equivalent dense weight (out × in), so code that only reads shapes keeps working."""
        up, down = self.up.weight, self.down.weight
        if callable(up):  # dynamically quantized: weight() is a method returning a quantized tensor
            up, down = up().dequantize(), down().dequantize()
        return (up @ down).detach()

    def forward(self, x: Tensor) -> Tensor:
        return self.up(self.down(x))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


def low_rank_ranks(model: nn.Module) -> dict[str, int]:
    """Every :class:`LowRankLinear` in ``model`` and its rank: what the shapes manifest stores."""
    return {n: m.rank for n, m in model.named_modules() if isinstance(m, LowRankLinear)}


def apply_low_rank_shapes(model: nn.Module, ranks: Mapping[str, int]) -> None:
    """Replace the named Linear layers with blank :class:`LowRankLinear` modules of the saved ranks (before
    loading weights): the loader's half of :func:`low_rank_ranks`."""
    for name, rank in ranks.items():
        try:
            linear = model.get_submodule(name)
        except AttributeError as err:
            raise PrunekitError(f"the manifest names low-rank module {name!r}, which the model does not have") from err
        if not isinstance(linear, nn.Linear):
            raise PrunekitError(f"low-rank module {name!r} is a {type(linear).__name__}, not a Linear")
        blank = LowRankLinear(linear.in_features, linear.out_features, int(rank), bias=linear.bias is not None)
        replace_module(model, name, blank.to(dtype=linear.weight.dtype))


def replace_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` where ``name`` (dotted) is in ``model``."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)
