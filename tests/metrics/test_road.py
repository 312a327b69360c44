"""ROAD's noisy linear imputation against a brute-force dense solve, and its known properties."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from helpers.threads import one_torch_thread  # noqa: F401 (autouse fixture)
from xcos_lightning.metrics.faithfulness import fill_canvas, perturbation_scores, tie_seeds
from xcos_lightning.metrics.road import TIE, noisy_linear_imputation


def dense_oracle(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """The imputation written pixel by pixel: one dense equation per removed pixel, ``numpy.linalg.solve``."""
    c, h, w = image.shape
    unknown = [(y, x) for y in range(h) for x in range(w) if removed[y, x]]
    position = {p: i for i, p in enumerate(unknown)}
    kept = [(y, x) for y in range(h) for x in range(w) if not removed[y, x]]
    mean = np.mean([image[:, y, x] for y, x in kept], axis=0) if kept else image.mean(axis=(1, 2))
    a = np.zeros((len(unknown), len(unknown)))
    b = np.zeros((len(unknown), c))
    for i, (y, x) in enumerate(unknown):
        a[i, i] += TIE
        b[i] += TIE * mean
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if (dy, dx) == (0, 0) or not (0 <= y + dy < h and 0 <= x + dx < w):
                    continue
                weight = 1 / 6 if dy == 0 or dx == 0 else 1 / 12
                a[i, i] += weight
                if removed[y + dy, x + dx]:
                    a[i, position[y + dy, x + dx]] -= weight
                else:
                    b[i] += weight * image[:, y + dy, x + dx]
    out = image.copy()
    for i, (y, x) in enumerate(unknown):
        out[:, y, x] = np.linalg.solve(a, b)[i]
    return out


@pytest.mark.parametrize("share", [0.2, 0.6, 1.0])
def test_matches_a_dense_solve(share):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 6, 7, generator=g, dtype=torch.float64) * 0.8 + 0.1
    removed = torch.rand(6, 7, generator=g) < share
    got = noisy_linear_imputation(image, removed, noise=0.0)
    want = dense_oracle(image.numpy(), removed.numpy())
    np.testing.assert_allclose(got.numpy(), np.clip(want, 0, 1), atol=1e-10)
    assert torch.equal(got[:, ~removed], image[:, ~removed])  # kept pixels untouched


def test_known_answers():
    removed = torch.zeros(9, 9, dtype=torch.bool)
    removed[2:5, 3:7] = True
    removed[8, 0] = True  # a corner pixel: only 3 neighbours
    constant = torch.full((3, 9, 9), 0.37, dtype=torch.float64)
    torch.testing.assert_close(noisy_linear_imputation(constant, removed, noise=0.0), constant)
    everything = torch.ones(9, 9, dtype=torch.bool)  # no pixel kept: the image's mean colour
    torch.testing.assert_close(noisy_linear_imputation(constant, everything, noise=0.0), constant)
    # A linear ramp is harmonic for these symmetric weights: holes in its interior are filled exactly.
    ramp = (torch.arange(9, dtype=torch.float64) / 10).expand(3, 9, 9).clone()
    inner = torch.zeros(9, 9, dtype=torch.bool)
    inner[2:6, 2:7] = True
    torch.testing.assert_close(noisy_linear_imputation(ramp, inner, noise=0.0), ramp, atol=1e-5, rtol=0)


def test_noise_is_seeded_and_of_the_given_size():
    image = torch.full((3, 40, 40), 0.5)
    removed = torch.rand(40, 40, generator=torch.Generator().manual_seed(1)) < 0.5
    first = noisy_linear_imputation(image, removed, generator=torch.Generator().manual_seed(3))
    again = noisy_linear_imputation(image, removed, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, again) and first.dtype == image.dtype
    residual = (first - image)[:, removed]
    assert 0.008 < float(residual.std()) < 0.012 and float(residual.mean()).__abs__() < 0.002
    assert torch.equal(first[:, ~removed], image[:, ~removed])


def test_deletion_and_insertion_on_the_road_canvas():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 12, 12, generator=g)
    partner = torch.rand(2, 5, generator=g)

    def embed(x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3)).repeat(1, 2)[:, :5] - 0.4

    keys = torch.rand(2, 12, 12, generator=g)
    seeds = tie_seeds(0, torch.arange(2))
    deleted, inserted = perturbation_scores(embed, images, partner, keys, steps=4, fill="road", seeds=seeds)
    clean = torch.nn.functional.cosine_similarity(embed(images), partner, dim=1)
    torch.testing.assert_close(deleted[:, 0], clean)  # nothing removed yet
    torch.testing.assert_close(inserted[:, -1], clean)  # everything kept
    again = perturbation_scores(embed, images, partner, keys, steps=4, fill="road", seeds=seeds)
    assert torch.equal(again[0], deleted) and torch.equal(again[1], inserted)  # seeded per pair
    with pytest.raises(ValueError, match="no canvas"):
        fill_canvas(images, "road")
