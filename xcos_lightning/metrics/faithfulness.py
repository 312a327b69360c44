"""Deletion / Insertion (CorrRISE, seed 000, Algorithm 2): verification accuracy while the most salient
pixels of the explained image are deleted, or inserted into a plain canvas.

Protocol, for ``n`` steps and the fixed clean threshold ``t`` (accept iff ``cos > t``):

- fractions ``p_k = k / n`` for ``k = 0..n``: Algorithm 2's ``k = 1..n`` plus the start point ``p_0 = 0``
  (the clean image for deletion, the bare canvas for insertion), so the curve covers all of ``[0, 1]``;
- step ``k`` changes the ``round(p_k * H * W)`` top-ranked pixels (all channels) of the explained image:
  deletion replaces them by the canvas, insertion copies them onto the canvas;
- genuine pairs are explained by their similarity order and count as correct when accepted; impostor pairs
  by their dissimilarity order and count as correct when rejected; the two groups are reported separately;
- pixel order (``pixel_ranks``): the similarity order ranks the signed map descending, the dissimilarity
  order ascending (``PairExplanation.order_keys``); ties (flat regions, e.g. the 16 x 16 px cells of a 7 x 7
  map) are broken by a permutation seeded per pair (``tie_seeds``), not in raster order, which would delete
  every tied region top row first and reward maps for being flat;
- ``accuracy_k`` = share of correct (pair, explained side) trials at step ``k``;
- ``AUC = 100 * trapezoid(accuracy_k over p_k)`` in ``[0, 100]``: deletion lower = better, insertion
  higher = better.

Canvases (``fill``): ``zero`` black (the reference code), ``mean`` each image's per-channel mean colour
(S-RISE), ``blur`` the image under an 11 x 11 Gaussian of sigma 5 (RISE's insertion canvas), ``road``
ROAD's noisy linear imputation (``metrics.road``): the removed pixels are filled from their kept neighbours
plus noise (deletion removes the top-ranked pixels, insertion keeps them and removes the rest), the
published remedy for the out-of-distribution effect of scattered plain pixels. Its sparse solves cost
10-300 ms of CPU per 112 x 112 image (more the more pixels are removed): 3.0 s per pair for a 20-step
deletion + insertion curve of image A (one thread, 2-core shared machine).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from xcos_lightning.explain.base import PairExplanation, pair_seed
from xcos_lightning.explain.filters import gaussian_blur
from xcos_lightning.metrics.road import noisy_linear_imputation
from xcos_lightning.metrics.verification import _unique_rows

EmbedFn = Callable[[Tensor], Tensor]
# Scores (B, K) of representations (B, K, ...) of perturbed images against their partners' (B, ...).
Similarity = Callable[[Tensor, Tensor], Tensor]


def cosine(reps: Tensor, partner: Tensor) -> Tensor:
    """The default verifier: cosines ``(B, K)`` of embeddings ``(B, K, D)`` with partner embeddings ``(B, D)``."""
    return F.cosine_similarity(reps.float(), partner.float()[:, None], dim=2)

FILLS = ("zero", "mean", "blur", "road")
CANVASES = FILLS[:3]  # the fills that are one image; "road" depends on which pixels are removed


def accepts(scores: Tensor, threshold: float) -> Tensor:
    """Bool decisions ``score > threshold``, compared in float64: ``verification.roc`` places thresholds 1e-9
    below a score, which a float32 comparison would round onto the score itself."""
    return scores.double() > threshold


def fraction_grid(steps: int) -> Tensor:
    """Fractions ``k / steps`` for ``k = 0..steps``: float64 ``(steps + 1,)`` from 0 to 1."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return torch.arange(steps + 1, dtype=torch.float64) / steps


def pixel_counts(fractions: Tensor, pixels: int) -> Tensor:
    """Pixels changed at each fraction: ``round(fraction * pixels)``, long ``(K,)``."""
    return torch.round(fractions.double() * pixels).long()


def tie_seeds(seed: int, indices: Tensor) -> Tensor:
    """Tie-breaking seeds ``(B,)`` long of the pairs ``indices`` ``(B,)`` under the run ``seed``
    (``pair_seed(seed, index, "ties")``): a pair's order never depends on its batch or on other calls."""
    return torch.tensor([pair_seed(seed, int(i), "ties") for i in indices.flatten().tolist()], dtype=torch.long)


def pixel_ranks(keys: Tensor, seeds: Tensor) -> Tensor:
    """Rank of every pixel by descending ``keys``: ``(B, H, W)`` float -> ``(B, H, W)`` long, 0 = first.

    Equal keys are ordered by a random permutation of the pixels drawn from ``seeds[b]`` (``(B,)`` long,
    ``tie_seeds``): the same seed gives the same order on every device and run, and a constant map gives a
    seeded random order, not raster order.
    """
    if not torch.isfinite(keys).all():
        raise ValueError("saliency maps contain NaN or inf; the explainer produced invalid values")
    if seeds.shape != keys.shape[:1]:
        raise ValueError(f"seeds must be ({keys.shape[0]},), one per map, got {tuple(seeds.shape)}")
    flat = keys.flatten(1)
    perms = torch.stack([torch.randperm(flat.shape[1], generator=torch.Generator().manual_seed(int(seed)))
                         for seed in seeds.tolist()]).to(keys.device)
    # A stable sort of the permuted keys keeps ties in permutation order.
    order = perms.gather(1, torch.argsort(flat.gather(1, perms), dim=1, descending=True, stable=True))
    positions = torch.arange(flat.shape[1], device=keys.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions).view(keys.shape)


def fill_canvas(images: Tensor, fill: str) -> Tensor:
    """Plain canvas ``(B, 3, H, W)`` for images ``(B, 3, H, W)`` in ``[0, 1]``; ``fill`` in ``CANVASES``."""
    if fill == "zero":
        return torch.zeros_like(images)
    if fill == "mean":
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images).clone()
    if fill == "blur":
        b, c, h, w = images.shape
        return gaussian_blur(images.reshape(b * c, h, w), size=11, sigma=5.0).view_as(images)
    if fill == "road":
        raise ValueError("fill 'road' imputes from the pixels kept, so it is no canvas: use perturbed_embeddings")
    raise ValueError(f"fill must be one of {FILLS}, got {fill!r}")


def replaced_embeddings(embed_fn: EmbedFn, base: Tensor, other: Tensor, ranks: Tensor, counts: Tensor,
                        batch_size: int = 64) -> Tensor:
    """Embeddings ``(B, K, D)`` of ``base[b]`` with its ``counts[b, k]`` top-ranked pixels taken from ``other[b]``.

    ``base``, ``other``: ``(B, 3, H, W)``; ``ranks``: ``(B, H, W)`` from ``pixel_ranks``; ``counts``:
    long ``(B, K)``. Deletion is ``(image, canvas)``, insertion ``(canvas, image)``, DPR
    ``(patched, original)``. The ``B * K`` images are built and embedded ``batch_size`` at a time.
    """
    b_count, k_count = counts.shape
    counts = counts.to(base.device)
    out = []
    with torch.no_grad():
        for start in range(0, b_count * k_count, batch_size):
            flat = torch.arange(start, min(start + batch_size, b_count * k_count), device=base.device)
            b, k = flat // k_count, flat % k_count
            take = ranks[b] < counts[b, k][:, None, None]
            images = torch.where(take[:, None], other[b], base[b])
            out.append(embed_fn(images).float())
    out = torch.cat(out)
    return out.view(b_count, k_count, *out.shape[1:])


def perturbed_embeddings(embed_fn: EmbedFn, images: Tensor, ranks: Tensor, counts: Tensor, fill: str,
                         insertion: bool, batch_size: int = 64, *, seeds: Tensor) -> Tensor:
    """Embeddings ``(B, K, D)`` of ``images`` ``(B, 3, H, W)`` with their ``counts[b, k]`` top-ranked pixels deleted
    (``insertion=False``) or with only those kept on the canvas (``insertion=True``), canvas ``fill``.

    ``ranks`` ``(B, H, W)`` from ``pixel_ranks``; ``seeds`` ``(B,)`` (``tie_seeds``) also seed ``road``'s
    noise, per pair, step and direction.
    """
    if fill != "road":
        canvas = fill_canvas(images, fill)
        base, other = (canvas, images) if insertion else (images, canvas)
        return replaced_embeddings(embed_fn, base, other, ranks, counts, batch_size)
    b_count, k_count = counts.shape
    counts = counts.to(images.device)
    stream = "road/insertion" if insertion else "road/deletion"
    out, pending = [], []
    with torch.no_grad():
        for b in range(b_count):
            for k in range(k_count):
                top = ranks[b] < counts[b, k]
                generator = torch.Generator().manual_seed(pair_seed(int(seeds[b]), k, stream))
                pending.append(noisy_linear_imputation(images[b], ~top if insertion else top, generator=generator))
                if len(pending) == batch_size or (b, k) == (b_count - 1, k_count - 1):
                    out.append(embed_fn(torch.stack(pending)).float())
                    pending = []
    out = torch.cat(out)
    return out.view(b_count, k_count, *out.shape[1:])


def perturbation_scores(embed_fn: EmbedFn, images: Tensor, partner: Tensor, keys: Tensor, steps: int,
                        fill: str = "zero", batch_size: int = 64, *, seeds: Tensor,
                        similarity: Similarity = cosine) -> tuple[Tensor, Tensor]:
    """Scores ``(B, steps + 1)`` of deleted and of inserted ``images`` against ``partner`` representations
    (``embed_fn`` of the partner images; ``similarity`` scores them, by default the cosine of embeddings).

    ``images`` ``(B, 3, H, W)`` are ranked by descending ``keys`` ``(B, H, W)``, ties by ``seeds`` ``(B,)``
    (``pixel_ranks``); column ``k`` is fraction ``k / steps``.
    """
    ranks = pixel_ranks(keys, seeds)
    counts = pixel_counts(fraction_grid(steps), keys[0].numel()).expand(len(images), -1)
    deleted = perturbed_embeddings(embed_fn, images, ranks, counts, fill, False, batch_size, seeds=seeds)
    inserted = perturbed_embeddings(embed_fn, images, ranks, counts, fill, True, batch_size, seeds=seeds)
    return similarity(deleted, partner), similarity(inserted, partner)


def pair_perturbation_scores(embed_fn: EmbedFn, img_a: Tensor, img_b: Tensor, explanation: PairExplanation,
                             labels: Tensor, steps: int, fill: str = "zero", sides: str = "a",
                             batch_size: int = 64, *, seeds: Tensor,
                             similarity: Similarity = cosine) -> tuple[Tensor, Tensor]:
    """The protocol on a batch of pairs: deletion and insertion scores ``(B, S, steps + 1)`` (``similarity`` of
    ``embed_fn``'s representations; default the embedding cosine).

    Each pair's pixels follow its similarity order if ``labels`` (bool ``(B,)``) says genuine, else its
    dissimilarity order (``explanation.order_keys``), ties by ``seeds`` ``(B,)`` (``tie_seeds``). ``sides``:
    ``"a"`` perturbs image A against clean B (S = 1), ``"b"`` the reverse, ``"both"`` does each in turn
    (S = 2, A first); the other image is never perturbed.
    """
    if sides not in ("a", "b", "both"):
        raise ValueError(f"sides must be 'a', 'b' or 'both', got {sides!r}")
    genuine = labels.to(img_a.device).bool()[:, None, None]
    runs = []
    with torch.no_grad():
        for side, image, partner in (("a", img_a, img_b), ("b", img_b, img_a)):
            if sides in (side, "both"):
                keys = torch.where(genuine, *explanation.order_keys(side))
                runs.append(perturbation_scores(embed_fn, image, embed_fn(partner), keys, steps, fill, batch_size,
                                                seeds=seeds, similarity=similarity))
    return torch.stack([r[0] for r in runs], 1), torch.stack([r[1] for r in runs], 1)


def accuracy_curve(scores: Tensor, labels: Tensor, threshold: float) -> Tensor:
    """Share of correct decisions per step: ``scores`` ``(N, S, K)``, ``labels`` ``(N,)`` -> float64 ``(K,)``.

    Correct = accepted (``score > threshold``) for genuine pairs, rejected for impostors; NaN if ``N = 0``.
    """
    if scores.shape[0] == 0:
        return torch.full((scores.shape[-1],), float("nan"), dtype=torch.float64)
    correct = accepts(scores, threshold) == labels.bool().to(scores.device)[:, None, None]
    return correct.double().mean(dim=(0, 1)).cpu()


def area_under_curve(values: Tensor, fractions: Tensor) -> float:
    """``100 * trapezoid(values over fractions)``; a curve in ``[0, 1]`` over ``[0, 1]`` gives ``[0, 100]``."""
    return 100 * float(torch.trapezoid(values.double().cpu(), fractions.double().cpu()))


class DeletionInsertionMetric(Metric):
    """Accumulates per-pair deletion/insertion cosines with an ``index``; ``compute`` keeps one copy per index.

    DistributedSampler pads ranks with repeated pairs; dropping repeats makes the DDP result equal to a
    single-process run. ``compute`` returns ``{genuine,impostor}/{deletion,insertion}_auc`` in % (NaN for
    an empty group) and ``{genuine,impostor}/pairs``; ``curves`` returns the accuracy curves.

    Args:
        threshold: fixed clean decision threshold on the cosine.
        steps: ``n``; updates carry ``n + 1`` columns (fractions ``k / n``).
    """

    full_state_update = False

    def __init__(self, threshold: float, steps: int = 20, **kwargs) -> None:
        super().__init__(**kwargs)
        self.threshold, self.steps = float(threshold), steps
        for name in ("deletion", "insertion", "labels", "indices"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, deletion: Tensor, insertion: Tensor, labels: Tensor, indices: Tensor) -> None:
        """``deletion``, ``insertion``: cosines ``(B, S, steps + 1)``; ``labels`` bool, ``indices`` ``(B,)``."""
        if deletion.ndim != 3 or deletion.shape[-1] != self.steps + 1 or insertion.shape != deletion.shape:
            raise ValueError(f"deletion/insertion must both be (B, S, {self.steps + 1}), "
                             f"got {tuple(deletion.shape)} and {tuple(insertion.shape)}")
        self.deletion.append(deletion.detach().float())
        self.insertion.append(insertion.detach().float())
        self.labels.append(labels.detach().bool().flatten())
        self.indices.append(indices.detach().long().flatten())

    def _unique(self) -> tuple[Tensor, Tensor, Tensor]:
        return _unique_rows(self.indices, self.deletion, self.insertion, self.labels)

    def per_pair(self) -> dict[str, tuple[Tensor, Tensor]]:
        """Each AUC of ``compute`` as a mean of per-pair values: ``{name: (values, group)}``.

        ``values`` float64 ``(N,)`` is one pair's AUC in % (its correct-decision curve, averaged over the
        perturbed sides), ``group`` bool ``(N,)`` the pairs the metric averages; rows follow the sorted unique
        indices, so two metrics over the same pairs line up row by row (paired comparisons).
        """
        deletion, insertion, labels = self._unique()
        fractions = fraction_grid(self.steps)
        out = {}
        for step, scores in (("deletion", deletion), ("insertion", insertion)):
            correct = (accepts(scores, self.threshold) == labels.bool()[:, None, None]).double().mean(dim=1).cpu()
            values = 100 * torch.trapezoid(correct, fractions, dim=1)
            out[f"genuine/{step}_auc"], out[f"impostor/{step}_auc"] = (values, labels.cpu()), (values, ~labels.cpu())
        return out

    def curves(self) -> dict[str, Tensor]:
        """``fractions`` and accuracy ``{genuine,impostor}/{deletion,insertion}``, float64 ``(steps + 1,)``."""
        deletion, insertion, labels = self._unique()
        out = {"fractions": fraction_grid(self.steps)}
        for group, mask in (("genuine", labels), ("impostor", ~labels)):
            out[f"{group}/deletion"] = accuracy_curve(deletion[mask], labels[mask], self.threshold)
            out[f"{group}/insertion"] = accuracy_curve(insertion[mask], labels[mask], self.threshold)
        return out

    def compute(self) -> dict[str, float]:
        curves = self.curves()
        labels = self._unique()[2]
        out = {f"{name}_auc": area_under_curve(curve, curves["fractions"])
               for name, curve in curves.items() if name != "fractions"}
        out["genuine/pairs"], out["impostor/pairs"] = float(labels.sum()), float((~labels).sum())
        return out
