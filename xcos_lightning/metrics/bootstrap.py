"""Paired bootstrap confidence intervals for differences between explainers on the same pairs.

Every faithfulness number of the benchmark is a mean of per-pair values over a group of pairs (a
Deletion AUC is the mean of each pair's AUC, by linearity of the trapezoid; DPR's FMR AUC the mean over
impostors of each one's accepted curve; a flip fraction the mean over a clean-decision group). Two
methods scored on the same pairs therefore differ by the mean of per-pair differences, and resampling
the pairs of the group with replacement (percentile bootstrap, Efron & Tibshirani 1993) gives an
interval for it that accounts for the pairing: a 0.7-point gap between two methods that behave alike on
most pairs is no evidence of an order.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class Difference(NamedTuple):
    """Mean per-pair difference ``method - baseline`` and its percentile interval; ``pairs`` in the group."""

    mean: float
    low: float
    high: float
    pairs: int


def bootstrap_means(values: Tensor, resamples: int = 1000, seed: int = 0) -> Tensor:
    """Means of ``resamples`` resamples (with replacement, same size) of ``values`` ``(N,)``: float64 ``(R,)``.

    The resample indices come from a seeded CPU generator that depends only on ``(N, resamples, seed)``, so
    every method compared on the same group is resampled identically.
    """
    if values.ndim != 1 or values.numel() == 0:
        raise ValueError(f"values must be a non-empty 1-D tensor, got shape {tuple(values.shape)}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, values.numel(), (resamples, values.numel()), generator=generator)
    return values.double().cpu()[rows].mean(dim=1)


def paired_difference(values: Tensor, baseline: Tensor, group: Tensor, resamples: int = 1000, seed: int = 0,
                      level: float = 0.95) -> Difference:
    """``mean(values - baseline)`` over the pairs in ``group`` and its ``level`` percentile interval.

    ``values``, ``baseline``: per-pair scores ``(N,)`` of two methods on the same pairs, row by row;
    ``group``: bool ``(N,)``. NaNs where the group is empty.
    """
    if values.shape != baseline.shape or values.shape != group.shape:
        raise ValueError(f"values {tuple(values.shape)}, baseline {tuple(baseline.shape)} and group "
                         f"{tuple(group.shape)} must have the same shape")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    diff = (values.double() - baseline.double())[group.bool()].cpu()
    if diff.numel() == 0:
        nan = float("nan")
        return Difference(nan, nan, nan, 0)
    means = bootstrap_means(diff, resamples, seed)
    tail = (1 - level) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
    return Difference(float(diff.mean()), low, high, int(diff.numel()))
