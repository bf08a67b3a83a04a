"""Finalist ranking: per-example KL to the unpruned model, and a paired test against uniform."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from prunekit.errors import PrunekitError
from prunekit.search.finalists import heldout_indices, kl_per_example, paired_choice


def test_kl_per_example_matches_torch_and_is_zero_for_the_same_predictions():
    rng = np.random.default_rng(0)
    t, s = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    want = F.kl_div(torch.log_softmax(torch.tensor(s), 1), torch.log_softmax(torch.tensor(t), 1), log_target=True,
                    reduction="none").sum(1).numpy()
    assert np.allclose(kl_per_example(s, t), want)
    assert np.allclose(kl_per_example(t + 5.0, t), 0.0)  # a shift of every logit changes nothing
    with pytest.raises(PrunekitError, match="one shape"):
        kl_per_example(s, t[:10])


def test_paired_choice_keeps_the_reference_when_the_gain_is_noise():
    rng = np.random.default_rng(1)
    ref = rng.exponential(0.1, size=1000)
    # a finalist with a slightly lower mean by luck: per-example noise far larger than the gain
    noise = rng.normal(0, 0.05, size=1000)
    lucky = ref + noise - noise.mean() - 0.001
    choice = paired_choice([ref, lucky], reference=0, margin=2.0)
    assert choice.best == 1 and choice.index == 0 and "kept the reference" in choice.note
    assert choice.gains[0] == 0 and choice.ses[0] == 0


def test_paired_choice_takes_a_clear_winner_even_if_examples_differ_in_difficulty():
    rng = np.random.default_rng(2)
    hard = rng.exponential(1.0, size=500)  # what every plan finds hard: cancels in the paired difference
    ref = hard + 0.05 + rng.normal(0, 0.01, size=500)
    better = hard + rng.normal(0, 0.01, size=500)
    worse = hard + 0.1
    choice = paired_choice([ref, worse, better], reference=0)
    assert choice.index == 2 and choice.best == 2 and not choice.note
    assert choice.z[2] > 10 and choice.gains[1] < 0
    # unpaired, the same gain would be within noise: its SE is that of the hard examples' spread
    unpaired_se = np.sqrt(ref.var(ddof=1) / 500 + better.var(ddof=1) / 500)
    assert choice.gains[2] < 2 * unpaired_se


def test_paired_choice_ties_and_bad_input():
    same = np.ones(10)
    assert paired_choice([same, same.copy()], reference=0).index == 0  # an exact tie keeps the reference
    with pytest.raises(PrunekitError, match="same"):
        paired_choice([same, np.ones(9)])
    with pytest.raises(PrunekitError, match="reference"):
        paired_choice([same], reference=3)
    with pytest.raises(PrunekitError, match="margin"):
        paired_choice([same], margin=-1)


def test_heldout_indices_are_seeded_and_leave_training_data():
    a, b = heldout_indices(100, 20, seed=0), heldout_indices(100, 20, seed=0)
    assert np.array_equal(a, b) and len(set(a.tolist())) == 20 and list(a) == sorted(a)
    assert not np.array_equal(a, heldout_indices(100, 20, seed=1))
    with pytest.raises(PrunekitError, match="recovery needs"):
        heldout_indices(10, 10, seed=0)
