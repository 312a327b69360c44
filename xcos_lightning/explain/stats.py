"""Rank and correlation helpers; correlations are matrix products of standardised vectors."""
from __future__ import annotations

import math

import torch
from torch import Tensor


def average_ranks(x: Tensor, dim: int = -1) -> Tensor:
    """1-based ranks of ``x`` along ``dim``; ties share their average rank (like ``scipy.stats.rankdata``)."""
    values = x.movedim(dim, -1).contiguous()
    ordered = values.sort(dim=-1).values
    below = torch.searchsorted(ordered, values, right=False)  # count of strictly smaller values
    upto = torch.searchsorted(ordered, values, right=True)    # count of smaller-or-equal values
    return ((below + upto + 1).float() / 2).movedim(-1, dim)


def standardize(x: Tensor, dim: int, rtol: float = 1e-6) -> Tensor:
    """Centre ``x`` along ``dim`` and scale it to unit L2 norm.

    The dot product of two standardised vectors is their Pearson correlation. Slices that do not vary
    (std below ``rtol`` times their largest magnitude: float rounding) become 0, so their correlation
    with anything is 0 instead of NaN.
    """
    centred = x - x.mean(dim, keepdim=True)
    norm = centred.norm(dim=dim, keepdim=True)
    varied = norm > rtol * math.sqrt(x.shape[dim]) * x.abs().amax(dim, keepdim=True)
    return torch.where(varied, centred / norm.clamp_min(torch.finfo(x.dtype).tiny), 0.0)


def spearman(x: Tensor, y: Tensor) -> Tensor:
    """Row-wise Spearman rank correlation of ``x`` and ``y`` ``(B, P)`` -> ``(B,)`` in ``[-1, 1]``."""
    return (standardize(average_ranks(x), 1) * standardize(average_ranks(y), 1)).sum(1)
