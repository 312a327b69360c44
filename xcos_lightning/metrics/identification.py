"""Deletion / Insertion for identification (seed 002): rank-1 accuracy of probes against a fixed gallery
while each probe's most salient pixels are deleted, or inserted into a plain canvas.

- Each probe is explained against each of its top-K gallery images (clean cosine ranking), giving the
  probe-side similarity maps ``(P, K, H, W)``; ``combine_maps`` turns them into one ranking per probe
  (``mean``, the default: what makes the probe look like all its top candidates; ``top1``: only the
  rank-1 candidate; ``max``).
- For ``p_k = k / n``, ``k = 0..n``, the top ``round(p_k * H * W)`` probe pixels are deleted (filled as
  in ``faithfulness``) or inserted into the canvas; the perturbed probe is re-embedded and matched
  against the unchanged gallery: correct iff its nearest gallery image (cosine; ties go to the lower
  gallery index) has the probe's identity.
- ``AUC = 100 * trapezoid(rank-1 accuracy over p_k)`` in ``[0, 100]``; deletion lower = better,
  insertion higher = better.
- ``gallery_from_pairs`` builds a closed-set probe / gallery split from the pairs of a verification set
  whose images carry identities (LFW-style folders): image A of each genuine pair is a probe, every other
  image of the pairs (B of the genuine pairs, both images of the impostor pairs) is in the gallery.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from xcos_lightning.explain.base import Explainer
from xcos_lightning.metrics.faithfulness import (EmbedFn, area_under_curve, fraction_grid, perturbed_embeddings,
                                                 pixel_counts, pixel_ranks)
from xcos_lightning.metrics.verification import _unique_rows

COMBINE = ("mean", "max", "top1")


class GallerySplit(NamedTuple):
    """Image indices (into the pair set's sources) and integer identities of probes and gallery, each ``(n,)``."""

    probes: np.ndarray
    probe_ids: np.ndarray
    gallery: np.ndarray
    gallery_ids: np.ndarray


def gallery_from_pairs(sources: Sequence, labels: np.ndarray, identities: np.ndarray,
                       pairs: np.ndarray) -> GallerySplit:
    """Closed-set identification from verification pairs: probes and gallery as image indices.

    ``sources``: the ``2N`` images (paths or bytes; equal sources are one image); ``labels`` bool ``(N,)``;
    ``identities``: ``(2N,)``, one per image; ``pairs``: the pair indices to use. Probes are image A of
    each genuine pair in ``pairs`` (each distinct image once); the gallery is every other distinct image of
    ``pairs`` that is not a probe, so no probe meets itself; probes with no image of their identity left in
    the gallery are dropped (the split stays closed-set). Both lists keep the order of first appearance.
    """
    codes = np.unique(np.asarray(identities), return_inverse=True)[1].reshape(-1)
    probes, seen = [], set()
    for i in pairs:
        if labels[i] and sources[2 * i] not in seen:
            seen.add(sources[2 * i])
            probes.append(2 * i)
    gallery, taken = [], set(seen)
    for i in pairs:
        for j in (2 * i, 2 * i + 1):
            if sources[j] not in taken:
                taken.add(sources[j])
                gallery.append(j)
    gallery = np.asarray(gallery, dtype=np.int64)
    present = set(codes[gallery].tolist())
    probes = np.asarray([j for j in probes if codes[j] in present], dtype=np.int64)
    if probes.size == 0:
        raise ValueError("no genuine pair leaves an image of its identity in the gallery; identification needs "
                         "genuine pairs whose identity has another image among the pairs")
    return GallerySplit(probes, codes[probes], gallery, codes[gallery])


def cosine_matrix(emb: Tensor, gallery_emb: Tensor) -> Tensor:
    """Cosines ``(..., G)`` of embeddings ``(..., D)`` with every gallery embedding ``(G, D)``."""
    return F.normalize(emb.float(), dim=-1) @ F.normalize(gallery_emb.float(), dim=-1).T


def top_k_gallery(probe_emb: Tensor, gallery_emb: Tensor, k: int) -> Tensor:
    """Indices ``(P, k)`` of each probe's ``k`` most similar gallery images, best first (ties: lower index)."""
    if not 1 <= k <= len(gallery_emb):
        raise ValueError(f"top-k must be in [1, {len(gallery_emb)} gallery images], got {k}")
    return torch.argsort(cosine_matrix(probe_emb, gallery_emb), dim=1, descending=True, stable=True)[:, :k]


def rank1_correct(emb: Tensor, identities: Tensor, gallery_emb: Tensor, gallery_ids: Tensor) -> Tensor:
    """Bool ``(...)``: the nearest gallery image of each embedding ``(..., D)`` has identity ``identities (...)``."""
    nearest = cosine_matrix(emb, gallery_emb).argmax(dim=-1)  # first maximum: lower gallery index on ties
    return gallery_ids.to(nearest.device)[nearest] == identities.to(nearest.device)


def probe_maps(explainer: Explainer, probes: Tensor, gallery_images: Tensor, top: Tensor,
               pairs_per_call: int = 16, probe_index: Tensor | None = None) -> Tensor:
    """Similarity orders ``(P, K, H, W)`` of each probe ``(P, 3, H, W)`` explained against its gallery images
    ``gallery_images[top[p]]`` (``top``: ``(P, K)`` from ``top_k_gallery``), ``pairs_per_call`` pairs at a time.

    Each is the probe's similarity key (``PairExplanation.order_keys``) scaled to peak magnitude 1, so the K
    candidates weigh alike in ``combine_maps``. ``probe_index`` ``(P,)``: the probes' indices, passed to the
    explainer (seeded methods draw per probe and candidate rank: index ``probe_index * K + k``)."""
    p_count, k_count = top.shape
    probe_rows = torch.arange(p_count, device=top.device).repeat_interleave(k_count)
    gallery_rows = top.flatten()
    pair_ids = None if probe_index is None else (probe_index.long()[:, None] * k_count
                                                + torch.arange(k_count)).flatten()
    maps = []
    for start in range(0, len(probe_rows), pairs_per_call):
        rows = slice(start, start + pairs_per_call)
        expl = explainer(probes[probe_rows[rows]], gallery_images[gallery_rows[rows]],
                         None if pair_ids is None else pair_ids[rows])
        key = expl.order_keys("a")[0]
        maps.append(key / key.abs().amax(dim=(1, 2), keepdim=True).clamp_min(1e-12))
    return torch.cat(maps).view(p_count, k_count, *probes.shape[-2:])


def combine_maps(maps: Tensor, how: str = "mean") -> Tensor:
    """One ranking map ``(P, H, W)`` per probe from its top-K maps ``(P, K, H, W)``."""
    if how == "mean":
        return maps.mean(dim=1)
    if how == "max":
        return maps.amax(dim=1)
    if how == "top1":
        return maps[:, 0]
    raise ValueError(f"combine must be one of {COMBINE}, got {how!r}")


def identification_correct(embed_fn: EmbedFn, probes: Tensor, probe_ids: Tensor, maps: Tensor, gallery_emb: Tensor,
                           gallery_ids: Tensor, steps: int = 20, fill: str = "zero",
                           batch_size: int = 64, *, seeds: Tensor) -> tuple[Tensor, Tensor]:
    """Rank-1 correctness ``(P, steps + 1)`` bool of deleted and of inserted probes.

    ``probes`` ``(P, 3, H, W)`` in ``[0, 1]`` with identities ``probe_ids`` ``(P,)``, ranked by descending
    ``maps`` ``(P, H, W)``, ties by ``seeds`` ``(P,)``; ``gallery_emb`` ``(G, D)`` with identities
    ``gallery_ids`` ``(G,)``.
    """
    ranks = pixel_ranks(maps, seeds)
    counts = pixel_counts(fraction_grid(steps), maps[0].numel()).expand(len(probes), -1)
    ids = probe_ids[:, None].expand(-1, steps + 1)
    out = []
    for insertion in (False, True):
        emb = perturbed_embeddings(embed_fn, probes, ranks, counts, fill, insertion, batch_size, seeds=seeds)
        out.append(rank1_correct(emb, ids, gallery_emb, gallery_ids))
    return out[0], out[1]


class IdentificationMetric(Metric):
    """Accumulates per-probe rank-1 correctness with an ``index``; ``compute`` keeps one copy per index.

    ``compute`` returns ``deletion_auc``, ``insertion_auc`` (%), ``rank1`` (clean, the deletion curve's
    first point) and ``probes``; ``curves`` returns ``fractions``, ``deletion`` and ``insertion``.
    """

    full_state_update = False

    def __init__(self, steps: int = 20, **kwargs) -> None:
        super().__init__(**kwargs)
        self.steps = steps
        for name in ("deletion", "insertion", "indices"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, deletion: Tensor, insertion: Tensor, indices: Tensor) -> None:
        """``deletion``, ``insertion``: bool ``(P, steps + 1)``; ``indices`` ``(P,)`` probe ids in the data set."""
        if deletion.ndim != 2 or deletion.shape[1] != self.steps + 1 or insertion.shape != deletion.shape:
            raise ValueError(f"deletion/insertion must both be (P, {self.steps + 1}), "
                             f"got {tuple(deletion.shape)} and {tuple(insertion.shape)}")
        self.deletion.append(deletion.detach().bool())
        self.insertion.append(insertion.detach().bool())
        self.indices.append(indices.detach().long().flatten())

    def _unique(self) -> tuple[Tensor, Tensor]:
        deletion, insertion = _unique_rows(self.indices, self.deletion, self.insertion)
        return deletion.double().cpu(), insertion.double().cpu()

    def per_pair(self) -> dict[str, tuple[Tensor, Tensor]]:
        """``deletion_auc`` / ``insertion_auc`` as ``{name: (values, group)}``: each probe's AUC % of its
        rank-1 correctness curve, float64 ``(P,)``, group all True; rows in sorted index order."""
        deletion, insertion = self._unique()
        fractions = fraction_grid(self.steps)
        everyone = torch.ones(len(deletion), dtype=torch.bool)
        return {f"{kind}_auc": (100 * torch.trapezoid(curve, fractions, dim=1), everyone)
                for kind, curve in (("deletion", deletion), ("insertion", insertion))}

    def curves(self) -> dict[str, Tensor]:
        deletion, insertion = self._unique()
        return {"fractions": fraction_grid(self.steps), "deletion": deletion.mean(0), "insertion": insertion.mean(0)}

    def compute(self) -> dict[str, float]:
        c = self.curves()
        return {"deletion_auc": area_under_curve(c["deletion"], c["fractions"]),
                "insertion_auc": area_under_curve(c["insertion"], c["fractions"]),
                "rank1": float(c["deletion"][0]), "probes": float(len(self._unique()[0]))}
