"""Verification and faithfulness metrics: pure functions plus ``torchmetrics.Metric`` wrappers."""
from xcos_lightning.metrics.verification import VerificationMetric, verification_metrics

__all__ = ["VerificationMetric", "verification_metrics"]
