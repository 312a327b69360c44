"""Patch-LFW and Decision-based Patch Replacement (xSSAB, seed 003), generalised to any ``PairSet``.

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

DPR, at the fixed clean threshold ``t`` (accept iff ``cos > t``): the explanation of the PATCHED pair
ranks A's pixels by its similarity order (signed map descending) if the patched pair is a match, else by
its dissimilarity order (signed map ascending);
for fractions ``p_k = k / n`` (``n = 20``: 0, 5%, ..., 95%, 100%) the ``round(p_k * H * W)`` top-ranked
pixels of the patched A get their original values back (a no-op outside the patches) and FMR (impostor
pairs accepted) and FNMR (genuine pairs rejected) are recomputed. ``p_0`` is the patched set, ``p_n``
the original one. ``AUC = 100 * trapezoid(rate over p_k)`` in ``[0, 100]``; lower = better.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchmetrics import Metric

from xcos_lightning.datamodules.image_io import as_hw, to_tensor
from xcos_lightning.datamodules.pair_set import PairSet
from xcos_lightning.errors import VerificationSetError
from xcos_lightning.metrics.faithfulness import (EmbedFn, Similarity, accepts, area_under_curve, cosine, fraction_grid,
                                                 pixel_counts, pixel_ranks, replaced_embeddings)
from xcos_lightning.metrics.verification import _unique_rows

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


def dpr_scores(embed_fn: EmbedFn, patched_a: Tensor, clean_a: Tensor, img_b: Tensor, sim_key: Tensor,
               dis_key: Tensor, threshold: float, steps: int = 20, batch_size: int = 64, *, seeds: Tensor,
               similarity: Similarity = cosine) -> Tensor:
    """Scores ``(B, steps + 1)`` of the patched pairs as the top ``k / steps`` of A's pixels are restored.

    ``patched_a``, ``clean_a``, ``img_b``: ``(B, 3, H, W)`` in ``[0, 1]``; ``sim_key``, ``dis_key``: the
    similarity and dissimilarity orders ``(B, H, W)`` of the explanation of the PATCHED pairs
    (``PairExplanation.order_keys``: for xSSAB its combined map ``pos - neg`` descending, as in the paper),
    pixels taken in descending key order, ties by ``seeds`` ``(B,)``. The order is chosen per pair by the
    patched decision; ``similarity`` scores ``embed_fn``'s representations (default: cosine).
    """
    with torch.no_grad():
        emb_p, emb_b = embed_fn(patched_a).float(), embed_fn(img_b).float()
    match = accepts(similarity(emb_p[:, None], emb_b)[:, 0], threshold)[:, None, None]
    ranks = pixel_ranks(torch.where(match, sim_key, dis_key), seeds)
    counts = pixel_counts(fraction_grid(steps), ranks[0].numel()).expand(len(patched_a), -1)
    emb = replaced_embeddings(embed_fn, patched_a, clean_a, ranks, counts, batch_size)
    return similarity(emb, emb_b)


def error_curves(scores: Tensor, labels: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """FMR (impostors accepted) and FNMR (genuine rejected) per step, float64 ``(K,)`` each, from
    ``scores`` ``(N, K)`` and ``labels`` bool ``(N,)``; NaN where the group is empty."""
    accepted, labels = accepts(scores, threshold).double().cpu(), labels.bool().cpu()
    nan = torch.full((scores.shape[1],), float("nan"), dtype=torch.float64)
    fmr = accepted[~labels].mean(0) if (~labels).any() else nan
    fnmr = 1 - accepted[labels].mean(0) if labels.any() else nan
    return fmr, fnmr


class DPRMetric(Metric):
    """Accumulates per-pair DPR cosines with an ``index``; ``compute`` keeps one copy per index (DDP padding).

    ``compute`` returns ``fmr_auc``, ``fnmr_auc`` (%, lower = better), ``fmr_patched``/``fnmr_patched``
    (rates before any replacement) and ``fmr_original``/``fnmr_original`` (all pixels restored).

    Args:
        threshold: the fixed clean threshold; steps: ``n`` (updates carry ``n + 1`` columns).
    """

    full_state_update = False

    def __init__(self, threshold: float, steps: int = 20, **kwargs) -> None:
        super().__init__(**kwargs)
        self.threshold, self.steps = float(threshold), steps
        for name in ("scores", "labels", "indices"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, scores: Tensor, labels: Tensor, indices: Tensor) -> None:
        """``scores`` ``(B, steps + 1)`` from ``dpr_scores``; ``labels`` bool ``(B,)``; ``indices`` ``(B,)``."""
        if scores.ndim != 2 or scores.shape[1] != self.steps + 1:
            raise ValueError(f"scores must be (B, {self.steps + 1}), got {tuple(scores.shape)}")
        self.scores.append(scores.detach().float())
        self.labels.append(labels.detach().bool().flatten())
        self.indices.append(indices.detach().long().flatten())

    def _unique(self) -> tuple[Tensor, Tensor]:
        scores, labels = _unique_rows(self.indices, self.scores, self.labels)
        return scores.cpu(), labels.bool().cpu()

    def per_pair(self) -> dict[str, tuple[Tensor, Tensor]]:
        """``fmr_auc`` / ``fnmr_auc`` as ``{name: (values, group)}``: each impostor's AUC % of its accepted
        curve (FMR) and each genuine pair's of its rejected curve (FNMR), float64 ``(N,)``, with the bool group,
        rows in sorted index order."""
        scores, labels = self._unique()
        accepted = accepts(scores, self.threshold).double()
        fractions = fraction_grid(self.steps)
        return {"fmr_auc": (100 * torch.trapezoid(accepted, fractions, dim=1), ~labels),
                "fnmr_auc": (100 * torch.trapezoid(1 - accepted, fractions, dim=1), labels)}

    def curves(self) -> dict[str, Tensor]:
        """``fractions``, ``fmr`` and ``fnmr``, float64 ``(steps + 1,)``."""
        scores, labels = self._unique()
        fmr, fnmr = error_curves(scores, labels, self.threshold)
        return {"fractions": fraction_grid(self.steps), "fmr": fmr, "fnmr": fnmr}

    def compute(self) -> dict[str, float]:
        c = self.curves()
        out = {}
        for rate in ("fmr", "fnmr"):
            out[f"{rate}_auc"] = area_under_curve(c[rate], c["fractions"])
            out[f"{rate}_patched"], out[f"{rate}_original"] = float(c[rate][0]), float(c[rate][-1])
        return out
