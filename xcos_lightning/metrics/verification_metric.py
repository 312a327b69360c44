"""``VerificationMetric``: the functional metrics of ``verification.py`` as a DDP-safe ``torchmetrics.Metric``."""
from __future__ import annotations

from lightning_utilities.core.rank_zero import rank_zero_warn
from torch import Tensor
from torchmetrics import Metric

from xcos_lightning.metrics.verification import _cat, _first_occurrence, verification_metrics


class VerificationMetric(Metric):
    """Accumulates ``(score, label, index)`` per pair; ``compute`` deduplicates by ``index`` first.

    DistributedSampler pads ranks with repeated samples, so the same pair can arrive twice under DDP;
    keeping one copy per index makes the result equal to a single-process run. Pairs are put back in
    index order so the k folds are the data set's own contiguous folds.
    """

    full_state_update = False

    def __init__(self, folds: int = 10, **kwargs) -> None:
        super().__init__(**kwargs)
        self.folds = folds
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")
        self.add_state("indices", default=[], dist_reduce_fx="cat")

    def update(self, scores: Tensor, labels: Tensor, indices: Tensor) -> None:
        self.scores.append(scores.detach().float().flatten())
        self.labels.append(labels.detach().bool().flatten())
        self.indices.append(indices.detach().long().flatten())

    def compute(self) -> dict[str, float]:
        scores, labels, indices = (_cat(x) for x in (self.scores, self.labels, self.indices))
        uniq, first = _first_occurrence(indices)
        folds = self.folds
        if uniq.numel() < folds:
            # fast_dev_run / limit_val_batches see a few pairs only: fewer folds beat no metric at all.
            folds = max(2, uniq.numel())
            rank_zero_warn(f"only {uniq.numel()} verification pairs: accuracy uses {folds} folds, "
                           f"not {self.folds}")
        return verification_metrics(scores[first], labels[first], folds)
