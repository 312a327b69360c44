"""Faithfulness of one explanation method over a set of pairs, accumulated in DDP-safe torchmetrics.

Two measures, both from ``xcos_lightning.metrics`` and both decided by the same verifier (the model's
embedding cosine at one fixed threshold), so every method, intrinsic or post-hoc, is judged alike:

- ``deletion_insertion``: CorrRISE deletion / insertion AUC of the verification accuracy, in ``[0, 100]``,
  genuine pairs explained by their similarity map, impostors by their dissimilarity map
  (``deletion_genuine`` lower = better, ``insertion_genuine`` higher = better; same for ``_impostor``);
- ``flip``: S-RISE flip fractions of image A, in ``[0, 1]``, lower = better (``flip_deletion``,
  ``flip_insertion``) and the share of pairs whose decision never flipped (``flip_unflipped``).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from xcos_lightning.explain.base import PairExplanation
from xcos_lightning.metrics.faithfulness import (DeletionInsertionMetric, EmbedFn, accepts, fraction_grid,
                                                 pair_perturbation_scores, tie_seeds)
from xcos_lightning.metrics.flip_fraction import FlipFractionMetric, flip_fractions

MEASURES = ("deletion_insertion", "flip")
# Scalar name -> key of DeletionInsertionMetric.compute / curves (without the "_auc" suffix).
DI_KEYS = {"deletion_genuine": "genuine/deletion", "insertion_genuine": "genuine/insertion",
           "deletion_impostor": "impostor/deletion", "insertion_impostor": "impostor/insertion"}
FLIP_KEYS = {"flip_deletion": "all/deletion", "flip_insertion": "all/insertion", "flip_unflipped": "all/unflipped"}


class FaithfulnessTracker(nn.Module):
    """The selected ``measures`` of one method; an ``nn.Module`` so ``.to(device)`` moves the metric states.

    Args:
        measures: names from ``MEASURES``.
        steps: fractions ``k / steps`` of the deletion/insertion curves.
        fill: canvas of deletion/insertion (``zero``, ``mean``, ``blur``).
        sides: image(s) perturbed by deletion/insertion (``a``, ``b``, ``both``).
        flip_steps: grid of the flip search before its pixel-exact bisection.
    """

    def __init__(self, measures: Sequence[str], steps: int = 10, fill: str = "zero", sides: str = "a",
                 flip_steps: int = 20) -> None:
        super().__init__()
        unknown = sorted(set(measures) - set(MEASURES))
        if unknown:
            raise ValueError(f"unknown faithfulness measure(s) {unknown}; choose from {list(MEASURES)}")
        self.steps, self.fill, self.sides, self.flip_steps = steps, fill, sides, flip_steps
        # The threshold is set per run (the model's EER threshold moves while it trains).
        self.deletion_insertion = DeletionInsertionMetric(0.0, steps) if "deletion_insertion" in measures else None
        self.flip = FlipFractionMetric() if "flip" in measures else None

    def update(self, embed_fn: EmbedFn, img_a: Tensor, img_b: Tensor, explanation: PairExplanation, labels: Tensor,
               indices: Tensor, threshold: float, batch_size: int) -> dict[str, Tensor]:
        """Measure the explanation of pairs ``img_a``, ``img_b`` ``(B, 3, H, W)`` in ``[0, 1]``.

        ``labels`` bool ``(B,)`` (True = genuine), ``indices`` long ``(B,)`` (pair ids, deduplicated at
        ``compute``). Returns each pair's own values, float64 ``(B,)``: ``deletion``/``insertion`` AUC of
        its own group (mean over pairs of a group = the group's AUC) and ``flip_deletion``/``flip_insertion``.
        """
        per_pair: dict[str, Tensor] = {}
        if self.deletion_insertion is not None:
            self.deletion_insertion.threshold = float(threshold)
            deletion, insertion = pair_perturbation_scores(embed_fn, img_a, img_b, explanation, labels, self.steps,
                                                           self.fill, self.sides, batch_size,
                                                           seeds=tie_seeds(0, indices))
            self.deletion_insertion.update(deletion, insertion, labels, indices)
            per_pair["deletion"] = pair_auc(deletion, labels, threshold, self.steps)
            per_pair["insertion"] = pair_auc(insertion, labels, threshold, self.steps)
        if self.flip is not None:
            flips = flip_fractions(embed_fn, img_a, img_b, *explanation.order_keys("a"), threshold,
                                   self.flip_steps, batch_size=batch_size, seeds=tie_seeds(0, indices))
            self.flip.update(flips, indices)
            per_pair["flip_deletion"], per_pair["flip_insertion"] = flips.deletion.cpu(), flips.insertion.cpu()
        return per_pair

    def compute(self) -> dict[str, float]:
        """Scalars over every rank's pairs (one copy per index): names of ``DI_KEYS`` and ``FLIP_KEYS``."""
        out: dict[str, float] = {}
        if self.deletion_insertion is not None:
            values = self.deletion_insertion.compute()
            out.update({name: values[f"{key}_auc"] for name, key in DI_KEYS.items()})
        if self.flip is not None:
            values = self.flip.compute()
            out.update({name: values[key] for name, key in FLIP_KEYS.items()})
        return out

    def curves(self) -> dict[str, tuple[list[float], list[float]]]:
        """Deletion/insertion accuracy curves over every rank's pairs: ``DI_KEYS`` name -> (fractions, accuracy).

        Every rank must call it (one gather per metric state); empty without ``deletion_insertion``.
        """
        if self.deletion_insertion is None:
            return {}
        with self.deletion_insertion.sync_context():  # curves() is not a synced method of its own
            curves = self.deletion_insertion.curves()
        fractions = curves["fractions"].tolist()
        return {name: (fractions, curves[key].tolist()) for name, key in DI_KEYS.items()}

    def reset(self) -> None:
        for metric in (self.deletion_insertion, self.flip):
            if metric is not None:
                metric.reset()


def pair_auc(scores: Tensor, labels: Tensor, threshold: float, steps: int) -> Tensor:
    """Per-pair AUC ``(B,)`` in ``[0, 100]`` of its correct decisions ``(B, S, steps + 1)`` over the fractions."""
    correct = (accepts(scores, threshold) == labels.bool().to(scores.device)[:, None, None]).double().mean(1)
    return 100 * torch.trapezoid(correct.cpu(), fraction_grid(steps), dim=1)
