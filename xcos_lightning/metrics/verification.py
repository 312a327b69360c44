"""Face-verification metrics: k-fold accuracy, EER, TAR@FAR, as functions (the DDP-safe ``torchmetrics.Metric``
is ``verification_metric.VerificationMetric``; this module imports no torchmetrics, so ``explain.py verify``
starts without it)."""
from __future__ import annotations

import torch
from torch import Tensor


def best_threshold(scores: Tensor, labels: Tensor) -> tuple[float, float]:
    """Threshold maximising accuracy of ``score > t`` on ``scores (N,)``, ``labels (N,)`` bool.

    Candidates are midpoints between consecutive sorted scores (plus both ends); ties resolve to the
    lowest such threshold. Returns ``(threshold, accuracy in [0, 1])``.
    """
    order = torch.argsort(scores)
    s, y = scores[order].double(), labels[order].bool()
    n = s.numel()
    # Threshold below position i: the i lowest scores are called impostor.
    impostor_below = torch.cat([y.new_zeros(1, dtype=torch.long), torch.cumsum(~y, 0)])
    genuine_above = y.sum() - torch.cat([y.new_zeros(1, dtype=torch.long), torch.cumsum(y, 0)])
    correct = impostor_below + genuine_above
    # Only split between distinct scores: equal scores must land on the same side.
    valid = torch.ones(n + 1, dtype=torch.bool)
    valid[1:n] = s[1:] > s[:-1]
    correct = torch.where(valid, correct, torch.full_like(correct, -1))
    i = int(torch.argmax(correct))
    if i == 0:
        t = float(s[0]) - 1e-6
    elif i == n:
        t = float(s[-1])
    else:
        t = float((s[i - 1] + s[i]) / 2)
    return t, float(correct[i]) / n


def kfold_accuracy(scores: Tensor, labels: Tensor, folds: int = 10) -> dict[str, float]:
    """insightface protocol: contiguous folds, no shuffle; best threshold on k-1 folds, accuracy on the rest.

    Returns ``acc`` (mean), ``acc_std`` and ``threshold`` (mean of the fold thresholds).
    """
    n = scores.numel()
    if n < folds:
        raise ValueError(f"{n} pairs cannot be split into {folds} folds")
    bounds = torch.linspace(0, n, folds + 1).round().long()
    accs, ths = [], []
    for k in range(folds):
        test = torch.zeros(n, dtype=torch.bool)
        test[bounds[k]:bounds[k + 1]] = True
        t, _ = best_threshold(scores[~test], labels[~test])
        accs.append(((scores[test] > t) == labels[test].bool()).double().mean())
        ths.append(t)
    accs_t = torch.stack(accs)
    return {"acc": float(accs_t.mean()), "acc_std": float(accs_t.std(unbiased=False)),
            "threshold": float(sum(ths) / folds)}


def roc(scores: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """False/true acceptance rates at every distinct threshold (accept iff ``score > t``), descending t.

    Returns ``(far, tar, thresholds)``, each ``(M,)``; the first point accepts nothing.
    """
    y = labels.bool()
    if y.all() or (~y).all():
        raise ValueError("ROC needs both genuine and impostor pairs")
    order = torch.argsort(scores, descending=True)
    s, y = scores[order].double(), y[order]
    tp = torch.cumsum(y, 0).double()
    fp = torch.cumsum(~y, 0).double()
    last_of_run = torch.ones_like(y)
    last_of_run[:-1] = s[1:] < s[:-1]
    zero = torch.zeros(1, dtype=torch.float64)
    far = torch.cat([zero, fp[last_of_run] / (~y).sum()])
    tar = torch.cat([zero, tp[last_of_run] / y.sum()])
    # Thresholds just below each accepted score run; the first accepts nothing.
    th = torch.cat([s[:1] + 1e-6, s[last_of_run] - 1e-9])
    return far, tar, th


def equal_error_rate(scores: Tensor, labels: Tensor) -> tuple[float, float]:
    """EER (where FAR = FRR, linearly interpolated on the ROC) and its threshold."""
    far, tar, th = roc(scores, labels)
    frr = 1 - tar
    diff = far - frr  # increases from -1 to +1 along the ROC
    j = int(torch.nonzero(diff >= 0)[0])
    if j == 0:
        return float(far[0]), float(th[0])
    w = float(-diff[j - 1] / (diff[j] - diff[j - 1]))
    eer = float(far[j - 1] + w * (far[j] - far[j - 1]))
    return eer, float(th[j - 1] + w * (th[j] - th[j - 1]))


def tar_at_far(scores: Tensor, labels: Tensor, far_target: float) -> float:
    """Highest TAR whose FAR does not exceed ``far_target`` (with few impostors this means FAR = 0)."""
    far, tar, _ = roc(scores, labels)
    return float(tar[far <= far_target + 1e-12].max())


def verification_metrics(scores: Tensor, labels: Tensor, folds: int = 10) -> dict[str, float]:
    """All verification metrics of ``scores (N,)`` (higher = more alike) and ``labels (N,)`` (True = genuine)."""
    scores, labels = scores.detach().cpu().double(), labels.detach().cpu().bool()
    out = kfold_accuracy(scores, labels, folds)
    out["eer"], out["eer_threshold"] = equal_error_rate(scores, labels)
    out["tar_far1e-3"] = tar_at_far(scores, labels, 1e-3)
    out["tar_far1e-4"] = tar_at_far(scores, labels, 1e-4)
    return out


def _cat(x: list[Tensor] | Tensor) -> Tensor:
    return torch.cat(x) if isinstance(x, list) else x


def _unique_rows(indices: list[Tensor] | Tensor, *states: list[Tensor] | Tensor) -> tuple[Tensor, ...]:
    """Each of ``states`` (concatenated list states, rows aligned with ``indices``) reduced to one row per
    index, rows in sorted index order: what DDP-padded metric states need before ``compute``."""
    _, first = _first_occurrence(_cat(indices))
    return tuple(_cat(state)[first] for state in states)


def _first_occurrence(indices: Tensor) -> tuple[Tensor, Tensor]:
    """Sorted unique indices and the position of one occurrence of each."""
    uniq, inverse = torch.unique(indices, sorted=True, return_inverse=True)
    pos = torch.arange(indices.numel(), device=indices.device)
    first = torch.full((uniq.numel(),), indices.numel(), dtype=torch.long, device=indices.device)
    first.scatter_reduce_(0, inverse, pos, reduce="amin")
    return uniq, first
