"""Mask sets of the perturbation explainers. A mask is ``(H, W)`` in ``[0, 1]``: 1 keeps a pixel,
0 replaces it by the fill value. Generators draw from a seeded CPU generator, so a (recipe, N, size,
seed) always yields the same set on every device, and build all N masks at once.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

Size = tuple[int, int]


def patch_masks(n: int, size: Size, generator: torch.Generator, *, patches: int = 10, patch_size: int = 30,
                black: bool = False, inside: bool = False) -> Tensor:
    """``(n, H, W)`` masks of ``patches`` square patches each (CorrRISE).

    Args:
        black: patches are 0; otherwise each patch has one value drawn uniformly in ``[0, 1)``.
        inside: patches lie fully inside the image (transcription); otherwise their centres are
            uniform over the image and they are clipped (paper reading: every pixel is varied about
            equally often, borders included). Overlapping patches keep the smaller value.
    """
    h, w = size
    lo_y, lo_x = (0, 0) if inside else (-(patch_size // 2), -(patch_size // 2))
    hi_y, hi_x = (h - patch_size, w - patch_size) if inside else (h - 1 - patch_size // 2, w - 1 - patch_size // 2)
    if hi_y < lo_y or hi_x < lo_x:
        raise ValueError(f"patch_size {patch_size} does not fit inside images of size {size}")
    top = torch.randint(lo_y, hi_y + 1, (n, patches), generator=generator)
    left = torch.randint(lo_x, hi_x + 1, (n, patches), generator=generator)
    values = torch.zeros(n, patches) if black else torch.rand(n, patches, generator=generator)
    rows, cols = torch.arange(h), torch.arange(w)
    masks = torch.ones(n, h, w)
    for p in range(patches):  # loop over the few patches; all n masks are filled at once
        in_rows = (rows >= top[:, p, None]) & (rows < top[:, p, None] + patch_size)  # (n, H)
        in_cols = (cols >= left[:, p, None]) & (cols < left[:, p, None] + patch_size)  # (n, W)
        covered = in_rows[:, :, None] & in_cols[:, None, :]
        masks = torch.where(covered, masks.minimum(values[:, p, None, None]), masks)
    return masks


def blob_masks(n: int, size: Size, generator: torch.Generator, *, blobs: int = 100, kernel: int = 40,
               sigma: float = 7.0) -> Tensor:
    """``(n, H, W)`` masks of ``blobs`` Gaussian blobs at uniform random pixel centres (S-RISE).

    Each blob is a Gaussian of peak 1 cut to a ``kernel x kernel`` window; blobs add up and each mask
    is divided by its own maximum, so masks span ``[0, 1]`` with dense clusters kept and gaps hidden.
    """
    h, w = size

    def profiles(length: int) -> Tensor:  # (n, blobs, length): 1-D Gaussian of each blob along one axis
        offsets = torch.arange(length) - torch.randint(0, length, (n, blobs, 1), generator=generator)
        inside = (offsets >= -(kernel // 2)) & (offsets < kernel - kernel // 2)
        return torch.exp(-0.5 * (offsets / sigma) ** 2) * inside

    # A blob is the outer product of its row and column profiles, so summing the blobs is one batched matmul.
    masses = profiles(h).transpose(1, 2) @ profiles(w)
    return masses / masses.amax(dim=(1, 2), keepdim=True)


def grid_masks(n: int, size: Size, generator: torch.Generator, *, cells: int = 7, p: float = 0.5) -> Tensor:
    """``(n, H, W)`` RISE masks: ``cells x cells`` Bernoulli(p) grids, bilinearly upsampled, randomly shifted."""
    h, w = size
    cell_h, cell_w = -(-h // cells), -(-w // cells)
    grids = (torch.rand(n, 1, cells, cells, generator=generator) < p).float()
    # Upsampling one cell too many and cropping at a random sub-cell offset avoids a fixed grid pattern.
    up = F.interpolate(grids, size=((cells + 1) * cell_h, (cells + 1) * cell_w), mode="bilinear",
                       align_corners=False)[:, 0]
    rows = torch.randint(0, cell_h, (n, 1), generator=generator) + torch.arange(h)
    cols = torch.randint(0, cell_w, (n, 1), generator=generator) + torch.arange(w)
    return up[torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def occlusion_masks(size: Size, patch_sizes: Sequence[int] = (7, 14, 28), stride: int = 5) -> Tensor:
    """``(N, H, W)`` masks each hiding one square patch, slid with ``stride`` for every patch size.

    The last position of each axis is snapped to the border so every pixel is occluded at least once.
    """
    h, w = size
    rows, cols = torch.arange(h), torch.arange(w)
    sets = []
    for k in patch_sizes:
        if k > min(h, w):
            raise ValueError(f"occlusion patch size {k} exceeds the image size {size}")
        tops = torch.tensor(sorted(set(range(0, h - k + 1, stride)) | {h - k}))
        lefts = torch.tensor(sorted(set(range(0, w - k + 1, stride)) | {w - k}))
        in_rows = (rows >= tops[:, None]) & (rows < tops[:, None] + k)  # (T, H)
        in_cols = (cols >= lefts[:, None]) & (cols < lefts[:, None] + k)  # (L, W)
        hidden = in_rows[:, None, :, None] & in_cols[None, :, None, :]  # (T, L, H, W)
        sets.append(1.0 - hidden.flatten(0, 1).float())
    return torch.cat(sets)


RECIPES: dict[str, Callable[..., Tensor]] = {
    "corrrise_paper": partial(patch_masks, patches=10, black=False, inside=False),
    "corrrise_transcription": partial(patch_masks, patches=3, black=True, inside=True),
    "srise": blob_masks,
    "rise": grid_masks,
}


@dataclass(frozen=True)
class MaskSet:
    """A seeded set of masks ``(N, H, W)`` in ``[0, 1]``, generated once and reused for every pair."""

    recipe: str
    seed: int | None  # None for deterministic sets (occlusion)
    masks: Tensor

    @classmethod
    def generate(cls, recipe: str, n: int, size: Size, seed: int = 0, **params) -> "MaskSet":
        """Draw ``n`` masks of ``size`` with a recipe from ``RECIPES`` and its keyword ``params``."""
        if recipe not in RECIPES:
            raise KeyError(f"unknown mask recipe {recipe!r}; choose one of {sorted(RECIPES)}")
        if n < 2:
            raise ValueError(f"need at least 2 masks to relate scores to masks, got n={n}")
        generator = torch.Generator().manual_seed(seed)
        return cls(recipe, seed, RECIPES[recipe](n, tuple(size), generator, **params))

    def to(self, device: torch.device | str) -> "MaskSet":
        return MaskSet(self.recipe, self.seed, self.masks.to(device))
