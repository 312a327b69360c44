"""10-fold accuracy, EER and TAR@FAR of ``metrics.verification`` against independent computations: a brute-force
threshold sweep in NumPy and scikit-learn's ``roc_curve``, on real LFW scores (200 pairs scored by the pretrained
MobileFaceNet) and on synthetic scores with many ties."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_curve

from xcos_lightning.datamodules.pairs_file import load_pair_set
from xcos_lightning.evaluate import score_pair_set
from xcos_lightning.metrics.verification import (best_threshold, equal_error_rate, kfold_accuracy, tar_at_far,
                                                 verification_metrics)
from xcos_lightning.io.spec import load_model


def sweep_best_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Every candidate threshold (below all, each midpoint of distinct sorted scores, the top) tried in turn;
    the lowest of the best. Accept iff score > t."""
    distinct = np.unique(scores)
    candidates = [distinct[0] - 1.0, *((distinct[1:] + distinct[:-1]) / 2), distinct[-1]]
    accuracies = [float(((scores > t) == labels).mean()) for t in candidates]
    best = max(accuracies)
    return next(t for t, a in zip(candidates, accuracies) if a == best), best


def sweep_kfold(scores: np.ndarray, labels: np.ndarray, folds: int = 10) -> list[float]:
    """insightface's protocol written out: contiguous folds, the best threshold of the other folds."""
    bounds = np.round(np.linspace(0, len(scores), folds + 1)).astype(int)
    accuracies = []
    for k in range(folds):
        test = np.zeros(len(scores), dtype=bool)
        test[bounds[k]:bounds[k + 1]] = True
        t, _ = sweep_best_threshold(scores[~test], labels[~test])
        accuracies.append(float(((scores[test] > t) == labels[test]).mean()))
    return accuracies


def sklearn_eer(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """FAR = FRR on scikit-learn's ROC (accept iff score >= threshold), linearly interpolated."""
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    diff = fpr - (1 - tpr)
    j = int(np.argmax(diff >= 0))
    w = -diff[j - 1] / (diff[j] - diff[j - 1])
    eer = fpr[j - 1] + w * (fpr[j] - fpr[j - 1])
    return float(eer), float(thresholds[j - 1] + w * (thresholds[j] - thresholds[j - 1]))


def sklearn_tar_at_far(scores: np.ndarray, labels: np.ndarray, far: float) -> float:
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    return float(tpr[fpr <= far].max())


def check_against_oracles(scores: np.ndarray, labels: np.ndarray, *, threshold_atol: float) -> None:
    s, y = torch.from_numpy(scores), torch.from_numpy(labels)
    t, acc = best_threshold(s, y)
    t_ref, acc_ref = sweep_best_threshold(scores, labels)
    assert acc == pytest.approx(acc_ref, abs=1e-12) and t == pytest.approx(t_ref, abs=1e-9)
    folds = sweep_kfold(scores, labels)
    ours = kfold_accuracy(s, y)
    assert ours["acc"] == pytest.approx(np.mean(folds), abs=1e-12)
    assert ours["acc_std"] == pytest.approx(np.std(folds), abs=1e-12)
    eer, eer_t = equal_error_rate(s, y)
    eer_ref, eer_t_ref = sklearn_eer(scores, labels)
    assert eer == pytest.approx(eer_ref, abs=1e-12)
    assert eer_t == pytest.approx(eer_t_ref, abs=threshold_atol)  # ours sits 1e-9 below each score run
    for far in (1e-3, 1e-2, 0.1, 0.3):
        assert tar_at_far(s, y, far) == pytest.approx(sklearn_tar_at_far(scores, labels, far), abs=1e-12)


@pytest.fixture(scope="module")
def lfw_scores(shared_dir, tmp_path_factory) -> tuple[np.ndarray, np.ndarray]:
    """Cosines of 100 genuine and 100 impostor LFW pairs (pairs.txt's first fold, alternating genuine and
    impostor so every contiguous fold holds both), pretrained MobileFaceNet, the lfw: preprocessing, no flip."""
    lines = (shared_dir / "data/lfw/pairs.txt").read_text().splitlines()[1:601]
    genuine, impostor = lines[:100], lines[300:400]
    pairs = tmp_path_factory.mktemp("lfw") / "pairs.txt"
    pairs.write_text("\n".join(line for both in zip(genuine, impostor) for line in both) + "\n")
    lfw = shared_dir / "data/lfw"
    pair_set = load_pair_set(f"pairs:{lfw}:{pairs}", crop=120)
    model = load_model(f"mobilefacenet:{shared_dir / 'weights/mobilefacenet_128d.pt'}").eval()
    with torch.inference_mode():
        out = score_pair_set(model, pair_set, batch_size=50, flip=False, progress=False)
    return out["cos"].double().numpy(), out["label"].numpy()


def test_real_lfw_scores_agree_with_the_oracles(lfw_scores):
    scores, labels = lfw_scores
    assert len(scores) == 200 and labels.sum() == 100
    assert 0.85 < kfold_accuracy(torch.from_numpy(scores), torch.from_numpy(labels))["acc"] < 1.0  # a real model
    check_against_oracles(scores, labels, threshold_atol=1e-8)


@pytest.mark.parametrize("seed", range(5))
def test_synthetic_scores_with_ties_agree_with_the_oracles(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(300) < 0.5
    # Steps of 0.05: ~30 distinct values for 300 pairs, genuine and impostor pairs sharing most of them.
    scores = np.round(20 * np.where(labels, rng.normal(0.4, 0.2, 300), rng.normal(0.1, 0.2, 300))) / 20
    assert len(np.unique(scores)) < 40
    check_against_oracles(scores, labels, threshold_atol=1e-8)


def test_all_metrics_on_a_known_answer():
    """4 genuine (0.9, 0.8, 0.6, 0.3) and 4 impostor (0.7, 0.4, 0.2, 0.1) scores, by hand: accepting from the
    top, the ROC (FAR, TAR) runs (0, 1/4), (0, 1/2), (1/4, 1/2), (1/4, 3/4): FAR = FRR = 1/4 at its 4th point."""
    scores = torch.tensor([0.9, 0.8, 0.6, 0.3, 0.7, 0.4, 0.2, 0.1], dtype=torch.float64)
    labels = torch.tensor([True] * 4 + [False] * 4)
    assert best_threshold(scores, labels) == pytest.approx((0.25, 0.75))  # 6 of 8 also at 0.5: the lowest
    eer, _ = equal_error_rate(scores, labels)
    assert eer == pytest.approx(0.25)
    assert tar_at_far(scores, labels, 0.0) == pytest.approx(0.5)
    assert tar_at_far(scores, labels, 0.25) == pytest.approx(0.75)
    metrics = verification_metrics(scores, labels, folds=2)
    assert metrics["tar_far1e-3"] == pytest.approx(0.5)
