"""Verification and faithfulness metrics: pure functions plus ``torchmetrics.Metric`` wrappers."""
from xcos_lightning.metrics.faithfulness import (DeletionInsertionMetric, area_under_curve, fill_canvas,
                                                 pair_perturbation_scores, perturbation_scores, pixel_ranks,
                                                 tie_seeds)
from xcos_lightning.metrics.flip_fraction import FlipFractionMetric, FlipFractions, flip_fractions
from xcos_lightning.metrics.identification import (IdentificationMetric, combine_maps, identification_correct,
                                                   probe_maps, top_k_gallery)
from xcos_lightning.metrics.patch_dpr import (DPRMetric, PatchedPairSet, dpr_scores, identities_from_folders,
                                              make_patched_set)
from xcos_lightning.metrics.plots import line_plot
from xcos_lightning.metrics.verification import VerificationMetric, verification_metrics

__all__ = [
    "DPRMetric", "DeletionInsertionMetric", "FlipFractionMetric", "FlipFractions", "IdentificationMetric",
    "PatchedPairSet", "VerificationMetric", "area_under_curve", "combine_maps", "dpr_scores", "fill_canvas",
    "flip_fractions", "identification_correct", "identities_from_folders", "line_plot", "make_patched_set",
    "pair_perturbation_scores", "perturbation_scores", "pixel_ranks", "probe_maps", "tie_seeds", "top_k_gallery",
    "verification_metrics",
]
