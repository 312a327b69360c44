"""Paired bootstrap intervals: exact cases, coverage of a known mean, pairing, and bad input."""
from __future__ import annotations

import math

import pytest
import torch

from xcos_lightning.metrics.bootstrap import bootstrap_means, paired_difference


def test_constant_difference_has_a_zero_width_interval():
    baseline = torch.rand(50, generator=torch.Generator().manual_seed(0)) * 100
    d = paired_difference(baseline - 3.0, baseline, torch.ones(50, dtype=torch.bool))
    assert d.mean == pytest.approx(-3.0) and d.low == pytest.approx(-3.0) and d.high == pytest.approx(-3.0)
    assert d.pairs == 50


def test_interval_matches_the_normal_theory_width():
    # Differences ~ N(1, 2^2), n = 400: the 95 % interval of the mean is about 1 +- 1.96 * 2 / 20.
    diff = 1 + 2 * torch.randn(400, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    d = paired_difference(diff, torch.zeros(400), torch.ones(400, dtype=torch.bool), resamples=4000)
    half = 1.96 * float(diff.std()) / 20
    assert d.mean == pytest.approx(float(diff.mean()))
    assert d.high - d.low == pytest.approx(2 * half, rel=0.1)
    assert d.low < d.mean < d.high and d.low > 0  # a shift of 5 standard errors is resolved


def test_pairing_removes_the_spread_shared_by_both_methods():
    # Both methods share a large per-pair spread; method A is 0.5 lower on every pair but one.
    shared = 100 * torch.rand(200, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    a = shared - 0.5
    a[0] += 0.5
    d = paired_difference(a, shared, torch.ones(200, dtype=torch.bool))
    assert d.high < 0  # unpaired, the spread of ~29 would hide a 0.5 shift


def test_group_selects_pairs_and_empty_group_is_nan():
    values, baseline = torch.tensor([1.0, 2.0, 10.0, 20.0]), torch.zeros(4)
    d = paired_difference(values, baseline, torch.tensor([False, False, True, True]))
    assert d.mean == 15.0 and d.pairs == 2 and 10.0 <= d.low <= d.high <= 20.0
    empty = paired_difference(values, baseline, torch.zeros(4, dtype=torch.bool))
    assert math.isnan(empty.mean) and empty.pairs == 0


def test_resamples_are_seeded():
    x = torch.randn(30, generator=torch.Generator().manual_seed(3))
    assert torch.equal(bootstrap_means(x, 100, seed=5), bootstrap_means(x, 100, seed=5))
    assert not torch.equal(bootstrap_means(x, 100, seed=5), bootstrap_means(x, 100, seed=6))


def test_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        paired_difference(torch.zeros(3), torch.zeros(4), torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="level"):
        paired_difference(torch.zeros(3), torch.zeros(3), torch.ones(3, dtype=torch.bool), level=1.5)
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_means(torch.zeros(0))
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_means(torch.zeros(3), resamples=0)
