"""S-RISE flip fractions (seed 001): how many of the most salient pixels must change before the decision does.

Per pair, with the fixed threshold ``t`` (accept iff ``cos > t``) and the clean decision ``d0``:

- image A's pixels follow its similarity order (signed map descending) when ``d0`` is a match, else its
  dissimilarity order (ascending), ties broken by a seeded per-pair permutation (``pixel_ranks``);
- deletion: the top-ranked pixels of A are replaced by A's per-channel mean colour (S-RISE's fill) until
  the decision differs from ``d0``; the fraction is ``#deleted / #pixels`` (1 if it never flips);
- insertion: starting from the mean-colour canvas, the top-ranked pixels are copied back until the
  decision equals ``d0`` again (0 if the canvas already gives ``d0``; at most 1, the clean image).

S-RISE adds one pixel at a time; here a grid of ``steps`` fractions finds the first grid step that
flips, then bisection inside that step (``refine``) finds a count at which the decision has flipped
while one pixel fewer has not, i.e. a pixel-exact flip point. Lower = better for both. Clean decisions
and scores come from ``embed_fn``, not from the explainer.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torchmetrics import Metric

from xcos_lightning.metrics.faithfulness import (EmbedFn, Similarity, accepts, cosine, fill_canvas, fraction_grid,
                                                 pixel_counts, pixel_ranks, replaced_embeddings)
from xcos_lightning.metrics.verification import _unique_rows


class FlipFractions(NamedTuple):
    """Per-pair results, each ``(B,)``: fractions in ``[0, 1]``, flags and the clean decision."""

    deletion: Tensor
    insertion: Tensor
    deletion_flipped: Tensor
    match: Tensor


def first_decision(embed_fn: EmbedFn, base: Tensor, other: Tensor, ranks: Tensor, partner: Tensor,
                   threshold: float, target: Tensor, steps: int, refine: bool = True,
                   batch_size: int = 64, similarity: Similarity = cosine) -> tuple[Tensor, Tensor]:
    """Smallest pixel count whose replacement (``replaced_embeddings``) makes the decision equal ``target``.

    ``target`` bool ``(B,)``: decision sought (``cos > threshold``). Returns ``(counts long (B,), found
    bool (B,))``; where the target is never reached on the grid, the count is all pixels and found False.
    """
    pixels = ranks[0].numel()

    def reached(counts: Tensor, rows: Tensor) -> Tensor:
        emb = replaced_embeddings(embed_fn, base[rows], other[rows], ranks[rows], counts, batch_size)
        return accepts(similarity(emb, partner[rows]), threshold) == target[rows, None]

    rows = torch.arange(len(base), device=base.device)
    grid = pixel_counts(fraction_grid(steps), pixels).to(base.device)
    hit = reached(grid.expand(len(base), -1), rows)
    found = hit.any(dim=1)
    k = torch.where(found, hit.double().argmax(dim=1), torch.full_like(rows, steps))
    hi = grid[k]
    lo = torch.where(k > 0, grid[(k - 1).clamp_min(0)], hi)
    while refine:
        active = (found & (hi - lo > 1)).nonzero().flatten()
        if active.numel() == 0:
            break
        mid = (lo[active] + hi[active]) // 2
        now = reached(mid[:, None], active)[:, 0]
        hi[active] = torch.where(now, mid, hi[active])
        lo[active] = torch.where(now, lo[active], mid)
    return hi, found


def flip_fractions(embed_fn: EmbedFn, img_a: Tensor, img_b: Tensor, sim_key: Tensor, dis_key: Tensor,
                   threshold: float, steps: int = 100, refine: bool = True, batch_size: int = 64, *,
                   seeds: Tensor, similarity: Similarity = cosine) -> FlipFractions:
    """S-RISE deletion/insertion flip fractions of image A of each pair (see the module docstring).

    ``img_a``, ``img_b``: ``(B, 3, H, W)`` in ``[0, 1]``; ``sim_key``, ``dis_key``: image A's similarity and
    dissimilarity orders ``(B, H, W)`` (``PairExplanation.order_keys("a")``, descending); ``seeds`` ``(B,)``
    break ties (``tie_seeds``); ``similarity`` scores ``embed_fn``'s representations (default: cosine).
    """
    with torch.no_grad():
        emb_a, emb_b = embed_fn(img_a).float(), embed_fn(img_b).float()
    match = accepts(similarity(emb_a[:, None], emb_b)[:, 0], threshold)
    ranks = pixel_ranks(torch.where(match[:, None, None], sim_key, dis_key), seeds)
    canvas = fill_canvas(img_a, "mean")
    pixels = ranks[0].numel()
    deleted, flipped = first_decision(embed_fn, img_a, canvas, ranks, emb_b, threshold, ~match, steps, refine,
                                      batch_size, similarity)
    inserted, _ = first_decision(embed_fn, canvas, img_a, ranks, emb_b, threshold, match, steps, refine, batch_size,
                                 similarity)
    return FlipFractions(deleted.double() / pixels, inserted.double() / pixels, flipped, match)


class FlipFractionMetric(Metric):
    """Accumulates ``FlipFractions`` with an ``index``; ``compute`` keeps one copy per index (DDP padding).

    ``compute`` returns, for the groups ``all``, ``match`` and ``nonmatch`` (clean decision):
    ``<group>/deletion``, ``<group>/insertion`` (mean fractions), ``<group>/average`` (their mean),
    ``<group>/unflipped`` (share of pairs whose decision never flipped under deletion) and
    ``<group>/pairs``; NaN for an empty group.
    """

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in ("deletion", "insertion", "flipped", "match", "indices"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, flips: FlipFractions, indices: Tensor) -> None:
        self.deletion.append(flips.deletion.detach().double().flatten())
        self.insertion.append(flips.insertion.detach().double().flatten())
        self.flipped.append(flips.deletion_flipped.detach().bool().flatten())
        self.match.append(flips.match.detach().bool().flatten())
        self.indices.append(indices.detach().long().flatten())

    def _unique(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        rows = _unique_rows(self.indices, self.deletion, self.insertion, self.flipped, self.match)
        return tuple(row.cpu() for row in rows)

    def per_pair(self) -> dict[str, tuple[Tensor, Tensor]]:
        """``<group>/deletion`` and ``<group>/insertion`` of ``compute`` as ``{name: (values, group)}``: each
        pair's fraction, float64 ``(N,)``, and the bool ``(N,)`` pairs of the group, rows in sorted index order."""
        deletion, insertion, _, match = self._unique()
        return {f"{group}/{kind}": (values, mask) for group, mask in (("match", match), ("nonmatch", ~match))
                for kind, values in (("deletion", deletion), ("insertion", insertion))}

    def compute(self) -> dict[str, float]:
        deletion, insertion, flipped, match = self._unique()
        out = {}
        for group, mask in (("all", torch.ones_like(match)), ("match", match), ("nonmatch", ~match)):
            d, i = deletion[mask].mean(), insertion[mask].mean()
            out[f"{group}/deletion"], out[f"{group}/insertion"] = float(d), float(i)
            out[f"{group}/average"] = float((d + i) / 2)
            out[f"{group}/unflipped"] = float((~flipped[mask]).double().mean())
            out[f"{group}/pairs"] = float(mask.sum())
        return out
