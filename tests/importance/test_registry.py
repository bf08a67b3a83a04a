"""A new criterion (or solver) is one class: registered, it is usable wherever it says it applies —
unstructured pruning, group scoring, the one-shot engine — and refused in one line elsewhere."""

from __future__ import annotations

from collections.abc import Iterator

import _structured_zoo as zoo
import pytest
import torch
from torch import Tensor, nn

from prunekit.config import CLASSIFIER_METHODS, SOLVER_METHODS, DataOptions, PruneSettings
from prunekit.errors import PrunekitError
from prunekit.importance import METHODS, Importance, Taylor, describe, make_importance, register, registry, unregister
from prunekit.importance.groups import CRITERIA, DATA_GROUP_CRITERIA, LAYER_SCORES, group_scores
from prunekit.importance.registry import GROUPS, LAYERS, ONESHOT, WEIGHTS
from prunekit.pipeline import prune
from prunekit.prune import solvers
from prunekit.prune.oneshot import ONESHOT_METHODS, OneShotSettings, prune_oneshot

one_thread = zoo.one_thread  # autouse fixture


class WeightSquared(Importance):
    """w²: ranks like magnitude, but a different number, so its group sums are checkable."""

    name = "weight_squared"
    help = "w², for the registry's tests"
    applies = frozenset({WEIGHTS, GROUPS, ONESHOT})

    def scores(self, params: dict[str, nn.Parameter]) -> dict[str, Tensor]:
        return {n: p.detach().float().pow(2) for n, p in params.items()}


class WeightsOnly(WeightSquared):
    name = "weights_only"
    help = "w², single weights only"
    applies = frozenset({WEIGHTS})


@pytest.fixture()
def registered() -> Iterator[None]:
    for cls in (WeightSquared, WeightsOnly):
        register(cls)
    yield
    for cls in (WeightSquared, WeightsOnly):
        unregister(cls.name)


def windows(n: int = 6, seq_len: int = 12) -> Tensor:
    return torch.randint(1, zoo.VOCAB, (n, seq_len), generator=torch.Generator().manual_seed(0))


def test_the_constants_the_cli_reads_come_from_the_registries(registered):
    assert METHODS == ("magnitude", "random", "taylor", "movement", "wanda", "weight_squared", "weights_only")
    assert "weight_squared" in CRITERIA and "weights_only" not in CRITERIA
    assert DATA_GROUP_CRITERIA == ("taylor", "activation")  # the group criteria that need calibration batches
    assert ONESHOT_METHODS == ("magnitude", "wanda", "weight_squared", "sparsegpt")
    assert SOLVER_METHODS == ("sparsegpt",) and CLASSIFIER_METHODS[-1] == "sparsegpt"
    assert LAYER_SCORES == ("greedy", "loss", "skip", "bi", "groups")
    assert describe(GROUPS)["weight_squared"] == "w², for the registry's tests (needs: weights)"
    assert describe(WEIGHTS)["taylor"].endswith("(needs: gradients)")
    assert set(solvers.describe()) == {"sparsegpt", "refit", "reconstruct"}
    unregister("weights_only")
    assert "weights_only" not in METHODS  # live: the views follow the registry


def test_a_new_criterion_prunes_a_classifier_unstructured(registered, trained_tiny, tmp_path):
    clf, csv = trained_tiny
    s = PruneSettings(method="weight_squared", schedule="oneshot", sparsity=0.5, finetune_epochs=0, latency=False)
    report = prune(str(clf), DataOptions(str(csv)), tmp_path / "out", s)
    assert report["settings"]["prune"]["method"] == "weight_squared"
    assert report["stages"][-1]["sparsity"] == pytest.approx(0.5, abs=0.002)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_a_new_criterion_scores_heads_and_neurons(registered, family):
    model = zoo.build(family)
    mine = group_scores(model, criterion="weight_squared")
    l2 = group_scores(model, criterion="l2")  # sqrt of the same sums over the same slices
    for i in l2.heads:
        assert torch.allclose(mine.heads[i], l2.heads[i].pow(2), rtol=1e-5)
        assert torch.allclose(mine.kv[i], l2.kv[i].pow(2), rtol=1e-5)
        assert torch.allclose(mine.ffn[i], l2.ffn[i].pow(2), rtol=1e-5)
    assert mine.layers is not None and len(mine.layers) == zoo.LAYERS


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_a_new_criterion_runs_in_the_oneshot_engine(registered, family):
    """w² ranks exactly like |w|, so it must prune exactly what magnitude prunes."""
    ours, theirs = zoo.build(family), zoo.build(family)
    got = prune_oneshot(ours, windows(), OneShotSettings(method="weight_squared", batch_size=4))
    want = prune_oneshot(theirs, windows(), OneShotSettings(method="magnitude", batch_size=4))
    assert got.layer_sparsity == want.layer_sparsity and len(got.layer_sparsity) > 0
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_each_place_refuses_a_criterion_that_does_not_apply_there_in_one_line(registered):
    assert make_importance("weights_only").name == "weights_only"
    with pytest.raises(PrunekitError, match=r"unknown group criterion 'weights_only' \(it is a pruning method\)") as e:
        group_scores(zoo.build("bert"), criterion="weights_only")
    assert "\n" not in str(e.value)
    with pytest.raises(PrunekitError, match="unknown one-shot method 'weights_only'") as e:
        prune_oneshot(zoo.build("llama"), windows(), OneShotSettings(method="weights_only"))
    assert "\n" not in str(e.value)
    with pytest.raises(PrunekitError, match="unknown --importance 'weights_only'"):
        PruneSettings(heads=0.5, importance="weights_only").validate()
    with pytest.raises(PrunekitError, match="unknown pruning method 'l2' \\(it is a group criterion\\)"):
        make_importance("l2")


class FirstLayersFirst(Importance):
    name = "first_first"
    help = "keep the first layers: one score per layer, falling with depth"
    applies = frozenset({LAYERS})

    def rank_layers(self, model: nn.Module, **kw: object) -> Tensor:
        return -torch.arange(zoo.LAYERS, dtype=torch.float)


class GradientsOneShot(Taylor):
    name = "gradients_oneshot"
    help = "needs gradients, claims the one-shot engine"
    applies = frozenset({ONESHOT})


def test_a_new_layer_ranking_and_a_oneshot_criterion_that_needs_gradients():
    for cls in (FirstLayersFirst, GradientsOneShot):
        register(cls)
    try:
        assert "first_first" in LAYER_SCORES
        scores = group_scores(zoo.build("bert"), criterion="l1", layers="first_first")
        assert scores.layers.tolist() == [-float(i) for i in range(zoo.LAYERS)]
        with pytest.raises(PrunekitError, match="needs gradients: the one-shot engine only runs forward passes"):
            OneShotSettings(method="gradients_oneshot").check()
    finally:
        for cls in (FirstLayersFirst, GradientsOneShot):
            unregister(cls.name)
    with pytest.raises(PrunekitError, match="unknown layer score 'first_first'"):
        group_scores(zoo.build("bert"), criterion="l1", layers="first_first")


def test_the_registry_refuses_a_bad_class():
    class Nameless(Importance):
        help = "no name"

    class Helpless(Importance):
        name = "helpless"

    class Nowhere(Importance):
        name, help, applies = "nowhere", "applies to a place that does not exist", frozenset({"moon"})

    class Twin(Importance):
        name, help = "magnitude", "a second magnitude"

    for cls, msg in ((Nameless, "needs a name"), (Helpless, "one-line help"), (Nowhere, "applies to"),
                     (Twin, "already registered")):
        with pytest.raises(PrunekitError, match=msg):
            register(cls)
    assert registry.get("magnitude", WEIGHTS).__name__ == "Magnitude"


class HalfRows(solvers.Solver):
    """Prunes by itself: zeroes the right half of each row's columns (a toy, to prove the dispatch)."""

    name = "half_rows"
    help = "zero the right half of every row"
    prunes = True
    needs_hessian = False

    def solve(self, job: solvers.LayerJob, keep: Tensor | None) -> Tensor:
        keep = torch.ones_like(job.rows, dtype=torch.bool)
        keep[:, job.rows.shape[1] // 2:] = False
        job.rows.masked_fill_(~keep, 0.0)
        return keep


def test_a_new_solver_is_a_oneshot_and_classifier_method():
    solvers.register(HalfRows)
    try:
        assert "half_rows" in ONESHOT_METHODS and "half_rows" in SOLVER_METHODS and "half_rows" in CLASSIFIER_METHODS
        model = zoo.build("llama")
        result = prune_oneshot(model, windows(), OneShotSettings(method="half_rows", batch_size=4))
        assert set(result.layer_sparsity.values()) == {0.5}
        down = model.model.layers[0].mlp.down_proj.weight
        assert (down[:, down.shape[1] // 2:] == 0).all() and (down[:, : down.shape[1] // 2] != 0).all()
    finally:
        solvers.unregister("half_rows")
    assert "half_rows" not in ONESHOT_METHODS
    with pytest.raises(PrunekitError, match="unknown one-shot method 'half_rows'"):
        OneShotSettings(method="half_rows").check()
