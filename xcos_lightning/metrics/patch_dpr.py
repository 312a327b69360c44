"""Decision-based Patch Replacement (xSSAB, seed 003) on the Patch-LFW set of any ``PairSet``
(``xcos_lightning.datamodules.patched_pairs``: 27 patches of 16 px pasted into image A, from a donor of
another identity for genuine pairs, from the pair's own image B for impostor pairs).

DPR, at the fixed clean threshold ``t`` (accept iff ``cos > t``): the explanation of the PATCHED pair
ranks A's pixels by its similarity order (signed map descending) if the patched pair is a match, else by
its dissimilarity order (signed map ascending);
for fractions ``p_k = k / n`` (``n = 20``: 0, 5%, ..., 95%, 100%) the ``round(p_k * H * W)`` top-ranked
pixels of the patched A get their original values back (a no-op outside the patches) and FMR (impostor
pairs accepted) and FNMR (genuine pairs rejected) are recomputed. ``p_0`` is the patched set, ``p_n``
the original one. ``AUC = 100 * trapezoid(rate over p_k)`` in ``[0, 100]``; lower = better.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from xcos_lightning.metrics.faithfulness import (EmbedFn, Similarity, accepts, area_under_curve, cosine, fraction_grid,
                                                 pixel_counts, pixel_ranks, replaced_embeddings)
from xcos_lightning.metrics.verification import _unique_rows


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
