"""Verification and faithfulness metrics: pure functions plus ``torchmetrics.Metric`` wrappers.

Names load on first use (PEP 562 ``__getattr__``): ``explain.py verify`` needs only the functional
``metrics.verification``, and importing the package must not pull in torchmetrics (seconds of start-up).
"""
from importlib import import_module

_EXPORTS = {
    "DeletionInsertionMetric": "faithfulness", "area_under_curve": "faithfulness", "fill_canvas": "faithfulness",
    "pair_perturbation_scores": "faithfulness", "perturbation_scores": "faithfulness", "pixel_ranks": "faithfulness",
    "tie_seeds": "faithfulness",
    "FlipFractionMetric": "flip_fraction", "FlipFractions": "flip_fraction", "flip_fractions": "flip_fraction",
    "IdentificationMetric": "identification", "combine_maps": "identification",
    "identification_correct": "identification", "probe_maps": "identification", "top_k_gallery": "identification",
    "DPRMetric": "patch_dpr", "dpr_scores": "patch_dpr",
    "VerificationMetric": "verification_metric", "verification_metrics": "verification",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
