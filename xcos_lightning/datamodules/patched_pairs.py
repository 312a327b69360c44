"""Patch-LFW (xSSAB, seed 003), generalised to any ``PairSet``: the patched pair set on which
``metrics.patch_dpr`` measures Decision-based Patch Replacement.

Patched set: per pair, ``patches`` (27) squares of ``patch_size`` (16) px are pasted into image A only,
at positions drawn uniformly (overlaps allowed) from a generator seeded with ``seed``. Each patch is cut
from the donor at the same position (aligned faces: same face region):

- genuine pairs: a random image of a different identity (induces false non-matches). With an
  ``identities`` array (one label per image, ``2i``/``2i + 1``) the donor is drawn uniformly among all
  images of an identity other than the pair's. A bare ``PairSet`` does not know identities; then the donor is
  image B of a random impostor pair that shares no image with this pair. That image is a different
  person from A only as far as the set's impostor pairs are not the same person again, which holds for
  LFW's disjoint folds but is not checked; ``identities_from_folders`` recovers identities for sets read
  from identity folders (``lfw:``, ``pairs:``).
- impostor pairs: the pair's own image B (induces false matches).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from xcos_lightning.datamodules.image_io import as_hw, to_tensor
from xcos_lightning.datamodules.pair_set import PairSet
from xcos_lightning.errors import VerificationSetError

PATCHES, PATCH_SIZE = 27, 16


def patch_positions(pairs: int, size: int | tuple[int, int], patches: int = PATCHES, patch_size: int = PATCH_SIZE,
                    seed: int = 0) -> np.ndarray:
    """Top-left corners ``(pairs, patches, 2)`` int64 (row, column), uniform in ``[0, H - patch_size]`` x
    ``[0, W - patch_size]`` for faces of ``size`` (``S`` or ``(H, W)``; a square size draws the same corners
    as before non-square faces existed)."""
    h, w = as_hw(size)
    if not 0 < patch_size <= min(h, w):
        raise ValueError(f"patch_size {patch_size} must be in [1, image size {h}x{w}]")
    rng = np.random.default_rng([seed, 0])
    return rng.integers(0, np.array([h - patch_size + 1, w - patch_size + 1]), size=(pairs, patches, 2),
                        dtype=np.int64)


def patch_mask(positions: np.ndarray | Tensor, size: int | tuple[int, int], patch_size: int = PATCH_SIZE) -> Tensor:
    """Bool ``(H, W)`` covering the patches at ``positions`` ``(P, 2)`` on a face of ``size`` (``S`` or ``(H, W)``)."""
    mask = torch.zeros(*as_hw(size), dtype=torch.bool)
    for top, left in torch.as_tensor(positions).tolist():
        mask[top:top + patch_size, left:left + patch_size] = True
    return mask


def identities_from_folders(pair_set: PairSet) -> np.ndarray | None:
    """Identity (parent folder name) of every image, ``(2N,)`` str, or None if any image is held as bytes."""
    if not all(isinstance(s, Path) for s in pair_set.sources):
        return None
    return np.asarray([s.parent.name for s in pair_set.sources])


def choose_donors(pair_set: PairSet, identities: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """Donor image (index into ``pair_set.sources``) of each pair, ``(N,)`` int64; see the module docstring."""
    labels, n = pair_set.labels, len(pair_set)
    rng = np.random.default_rng([seed, 1])
    donors = 2 * np.arange(n, dtype=np.int64) + 1
    genuine = np.flatnonzero(labels)
    if identities is not None:
        if np.shape(identities) != (2 * n,):
            raise VerificationSetError(f"{pair_set.name}: {len(identities)} identities for {2 * n} images; "
                                       "give one identity per image (2 per pair)")
        codes = np.unique(np.asarray(identities), return_inverse=True)[1].reshape(-1)
        for i in genuine:
            others = np.flatnonzero((codes != codes[2 * i]) & (codes != codes[2 * i + 1]))
            if others.size == 0:
                raise VerificationSetError(f"{pair_set.name}: every image shows the identity of pair {i}; "
                                           "Patch-LFW needs a donor of another identity")
            donors[i] = others[rng.integers(others.size)]
        return donors
    impostors = np.flatnonzero(~labels)
    for i in genuine:
        own = {pair_set.sources[2 * i], pair_set.sources[2 * i + 1]}
        # First usable pair of a seeded shuffle: uniform over the usable ones, and almost always the first.
        usable = (k for k in rng.permutation(impostors) if pair_set.sources[2 * k + 1] not in own)
        k = next(usable, None)
        if k is None:
            raise VerificationSetError(f"{pair_set.name}: no impostor pair to take a donor image from for "
                                       f"genuine pair {i}; pass identities instead")
        donors[i] = 2 * k + 1
    return donors


class PatchedPairSet(Dataset):
    """Patch-LFW-style view of ``base``: items ``{"img_a": patched A, "img_a_clean": original A, "img_b",
    "patch_mask": bool (H, W), "donor": image index, "label", "index"}`` (images as ``PairSet``).

    ``positions`` ``(N, P, 2)`` and ``donors`` ``(N,)`` fix the patches; ``make_patched_set`` draws them.
    """

    def __init__(self, base: PairSet, positions: np.ndarray, donors: np.ndarray, patch_size: int = PATCH_SIZE):
        if positions.shape[0] != len(base) or donors.shape != (len(base),):
            raise ValueError(f"positions {positions.shape} and donors {donors.shape} must cover the {len(base)} pairs")
        self.base, self.positions, self.donors, self.patch_size = base, positions, donors, patch_size

    def __len__(self) -> int:
        return len(self.base)

    def mask(self, i: int) -> Tensor:
        """Bool ``(H, W)``: the pixels of pair ``i``'s image A that the patches cover."""
        return patch_mask(self.positions[i], self.base.size, self.patch_size)

    def __getitem__(self, i: int) -> dict:
        item = self.base[i]
        donor = item["img_b"] if self.donors[i] == 2 * i + 1 else to_tensor(self.base.load_image(int(self.donors[i])))
        mask = self.mask(i)
        return {**item, "img_a": torch.where(mask, donor, item["img_a"]), "img_a_clean": item["img_a"],
                "patch_mask": mask, "donor": int(self.donors[i])}


def make_patched_set(pair_set: PairSet, identities: np.ndarray | None = None, seed: int = 0,
                     patches: int = PATCHES, patch_size: int = PATCH_SIZE) -> PatchedPairSet:
    """The patched version of ``pair_set`` for ``seed``: the same seed gives the same patches and donors."""
    positions = patch_positions(len(pair_set), pair_set.size, patches, patch_size, seed)
    return PatchedPairSet(pair_set, positions, choose_donors(pair_set, identities, seed), patch_size)
