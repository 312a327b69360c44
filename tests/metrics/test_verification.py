import pytest
import torch

from xcos_lightning.metrics.verification import (best_threshold, equal_error_rate, kfold_accuracy, tar_at_far,
                                                 verification_metrics)
from xcos_lightning.metrics.verification_metric import VerificationMetric


def test_perfectly_separable_scores():
    labels = torch.tensor([True, False] * 50)
    scores = torch.where(labels, 0.8, 0.1) + torch.linspace(0, 0.01, 100)
    m = verification_metrics(scores, labels)
    assert m["acc"] == 1.0 and m["acc_std"] == 0.0
    assert m["eer"] == 0.0
    assert m["tar_far1e-3"] == 1.0
    assert 0.11 < m["threshold"] < 0.8


def test_best_threshold_hand_case():
    scores = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    labels = torch.tensor([False, False, True, False, True, True])
    t, acc = best_threshold(scores, labels)
    assert acc == pytest.approx(5 / 6)
    assert (t == pytest.approx(0.25)) or (t == pytest.approx(0.45))


def test_ties_are_not_split():
    scores = torch.tensor([0.5, 0.5, 0.5, 0.5])
    labels = torch.tensor([True, False, True, False])
    assert best_threshold(scores, labels)[1] == pytest.approx(0.5)


def test_eer_hand_case():
    # genuine 0.9, 0.8, 0.3 ; impostor 0.7, 0.2, 0.1: one error on each side at t in (0.3, 0.7)
    scores = torch.tensor([0.9, 0.8, 0.3, 0.7, 0.2, 0.1])
    labels = torch.tensor([True, True, True, False, False, False])
    eer, th = equal_error_rate(scores, labels)
    assert eer == pytest.approx(1 / 3)
    assert 0.3 <= th <= 0.7


def test_tar_at_far_uses_zero_false_accepts_when_resolution_is_coarse():
    scores = torch.tensor([0.9, 0.8, 0.6, 0.7, 0.2, 0.1])
    labels = torch.tensor([True, True, True, False, False, False])
    assert tar_at_far(scores, labels, 1e-3) == pytest.approx(2 / 3)


def test_kfold_uses_contiguous_folds():
    # Fold 0 is inverted: its threshold from the other folds misclassifies all of it.
    labels = torch.tensor([True, False] * 50)
    scores = torch.where(labels, 0.9, 0.1)
    scores[:10] = torch.where(labels[:10], 0.1, 0.9)
    out = kfold_accuracy(scores, labels, folds=10)
    assert out["acc"] == pytest.approx(0.9)


def test_metric_deduplicates_by_index():
    torch.manual_seed(0)
    labels = torch.rand(200) > 0.5
    scores = labels.float() + torch.randn(200)
    ref = verification_metrics(scores, labels)
    metric = VerificationMetric()
    # Out of order, with padding-style duplicates as a DistributedSampler would produce.
    perm = torch.randperm(200)
    metric.update(scores[perm[:120]], labels[perm[:120]], perm[:120])
    metric.update(scores[perm[100:]], labels[perm[100:]], perm[100:])
    metric.update(scores[perm[:7]], labels[perm[:7]], perm[:7])
    assert metric.compute() == pytest.approx(ref)
