"""ROAD's noisy linear imputation (Rong et al., ICML 2022, "A Consistent and Efficient Evaluation Strategy for
Attribution Methods"): removed pixels are filled from their neighbours instead of a plain colour.

Scattered black (or mean-colour) pixels are out of distribution for a face model: a pixel-level random map
then "deletes" faster than any explanation because the canvas itself, not the removed information, breaks
the model. ROAD removes that leak: every removed pixel takes the weighted average of its 8 neighbours
(weight 1/6 for the 4 direct ones, 1/12 for the 4 diagonal ones; neighbours outside the image are dropped
and the weights of the rest kept, as in the paper's code), which couples the removed pixels into one
sparse linear system per image, solved exactly (``scipy.sparse.linalg.spsolve``), plus Gaussian noise.

For removed pixel ``p`` with in-image neighbours ``N(p)``:

    (sum_{n in N(p)} w_n + eps) x_p - sum_{n in N(p), removed} w_n x_n = sum_{n in N(p), kept} w_n v_n + eps m

``v`` are the kept pixels' values, ``m`` the mean colour of the kept pixels (of the whole image when none is
kept) and ``eps = 1e-6`` a tie to it: without it a removed region with no kept pixel around it (the bare
canvas of an insertion curve, 100 % deleted) has no unique solution; with it such a region becomes ``m``
and every other solution moves by about ``1e-6``. Then ``x_p += noise * N(0, 1)`` (the paper: 0.01) and
the image is clipped to ``[0, 1]``.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import spsolve
from torch import Tensor

# (row offset, column offset, weight) of the 8 neighbours.
NEIGHBOURS = ((-1, -1, 1 / 12), (-1, 0, 1 / 6), (-1, 1, 1 / 12), (0, -1, 1 / 6), (0, 1, 1 / 6),
              (1, -1, 1 / 12), (1, 0, 1 / 6), (1, 1, 1 / 12))
TIE = 1e-6
NOISE = 0.01


def imputation_system(image: np.ndarray, removed: np.ndarray) -> tuple[coo_matrix, np.ndarray, np.ndarray]:
    """The sparse system of the module docstring: ``(A (n, n), b (n, C), unknown (n,))`` for an image
    ``(C, H, W)`` float64 and a bool mask ``(H, W)`` of the ``n`` removed pixels (``unknown``: their flat
    indices, the order of the unknowns)."""
    channels, h, w = image.shape
    flat_removed = removed.reshape(-1)
    values = image.reshape(channels, -1)
    unknown = np.flatnonzero(flat_removed)
    n = unknown.size
    variable = np.full(h * w, -1, dtype=np.int64)
    variable[unknown] = np.arange(n)
    y, x = np.divmod(unknown, w)
    known = ~flat_removed
    mean = values[:, known].mean(axis=1) if known.any() else values.mean(axis=1)
    diagonal = np.full(n, TIE)
    rhs = np.tile(TIE * mean, (n, 1))
    rows, cols, weights = [], [], []
    for dy, dx, weight in NEIGHBOURS:
        ny, nx = y + dy, x + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        equation = np.flatnonzero(inside)
        neighbour = ny[inside] * w + nx[inside]
        diagonal[equation] += weight
        kept = known[neighbour]
        rhs[equation[kept]] += weight * values[:, neighbour[kept]].T
        rows.append(equation[~kept])
        cols.append(variable[neighbour[~kept]])
        weights.append(np.full(int((~kept).sum()), -weight))
    rows.append(np.arange(n))
    cols.append(np.arange(n))
    weights.append(diagonal)
    matrix = coo_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    return matrix, rhs, unknown


def noisy_linear_imputation(image: Tensor, removed: Tensor, noise: float = NOISE,
                            generator: torch.Generator | None = None) -> Tensor:
    """``image`` ``(C, H, W)`` in ``[0, 1]`` with the pixels of the bool mask ``removed`` ``(H, W)`` imputed
    (module docstring); same shape, dtype and device. ``generator`` draws the noise (CPU)."""
    mask = removed.detach().cpu().numpy().astype(bool)
    if not mask.any():
        return image.clone()
    values = image.detach().cpu().double().numpy()
    matrix, rhs, unknown = imputation_system(values, mask)
    solution = spsolve(matrix.tocsc(), rhs).reshape(len(unknown), -1)  # (n, C)
    filled = torch.from_numpy(values.reshape(values.shape[0], -1).copy())
    filled[:, unknown] = torch.from_numpy(solution.T.copy())
    if noise:
        filled[:, unknown] += noise * torch.randn(filled.shape[0], len(unknown), generator=generator,
                                                  dtype=torch.float64)
    return filled.clamp_(0, 1).view(image.shape).to(image.device, image.dtype)
