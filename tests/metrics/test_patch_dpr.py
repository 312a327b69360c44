"""Patch-LFW generation from any PairSet and the DPR curve maths."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor

from helpers.threads import one_torch_thread  # noqa: F401 (autouse fixture)
from xcos_lightning.datamodules.image_io import to_tensor
from xcos_lightning.datamodules.pair_set import PairSet
from xcos_lightning.datamodules.patched_pairs import identities_from_folders, make_patched_set, patch_mask
from xcos_lightning.errors import VerificationSetError
from xcos_lightning.metrics import DPRMetric, dpr_scores, tie_seeds
from xcos_lightning.metrics.patch_dpr import error_curves


def _face(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (112, 112, 3), dtype=np.uint8)


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


# Identity of each image: pairs 0-2 genuine (identities 0, 1, 2), pairs 3-5 impostor.
IDENTITIES = np.array([0, 0, 1, 1, 2, 2, 0, 3, 1, 4, 3, 4])
LABELS = [True, True, True, False, False, False]


def toy_set() -> PairSet:
    return PairSet([_png(_face(j)) for j in range(12)], LABELS, "toy").check()


def test_patched_set_is_deterministic_and_touches_only_image_a():
    base = toy_set()
    first, again = make_patched_set(base, IDENTITIES, seed=3), make_patched_set(base, IDENTITIES, seed=3)
    other = make_patched_set(base, IDENTITIES, seed=4)
    assert first.positions.shape == (6, 27, 2)
    assert first.positions.min() >= 0 and first.positions.max() <= 112 - 16
    assert np.array_equal(first.positions, again.positions) and np.array_equal(first.donors, again.donors)
    assert not np.array_equal(first.positions, other.positions)
    for i in range(6):
        item, clean = first[i], base[i]
        assert torch.equal(item["img_a"], again[i]["img_a"])
        assert torch.equal(item["img_b"], clean["img_b"]) and torch.equal(item["img_a_clean"], clean["img_a"])
        mask = item["patch_mask"]
        assert torch.equal(mask, patch_mask(first.positions[i], 112, 16))
        changed = (item["img_a"] != clean["img_a"]).any(0)
        assert not changed[~mask].any()  # outside the patches A is untouched
        donor = to_tensor(base.load_image(item["donor"]))
        assert torch.equal(item["img_a"][:, mask], donor[:, mask])  # same positions in the donor


def test_patches_are_27_squares_of_16_pixels():
    positions = make_patched_set(toy_set(), IDENTITIES, seed=0).positions
    for pair in positions:
        mask = patch_mask(pair, 112, 16)
        single = [patch_mask(pair[k:k + 1], 112, 16) for k in range(27)]
        assert all(int(m.sum()) == 256 for m in single)
        assert torch.equal(mask, torch.stack(single).any(0))


def test_donors_come_from_another_identity_or_the_impostor_partner():
    patched = make_patched_set(toy_set(), IDENTITIES, seed=1)
    for i, genuine in enumerate(LABELS):
        donor = patched.donors[i]
        if genuine:
            assert IDENTITIES[donor] != IDENTITIES[2 * i]
        else:
            assert donor == 2 * i + 1
    # Without identities: image B of another (impostor) pair.
    fallback = make_patched_set(toy_set(), None, seed=1)
    for i in range(3):
        donor = fallback.donors[i]
        assert donor % 2 == 1 and not LABELS[donor // 2] and donor // 2 != i
    with pytest.raises(VerificationSetError, match="another identity"):
        make_patched_set(toy_set(), np.zeros(12, dtype=int))


def test_identities_from_folders(tmp_path):
    sources = []
    for name in ("ann", "bob", "ann", "cid"):
        folder = tmp_path / name
        folder.mkdir(exist_ok=True)
        path = folder / f"{name}_{len(sources):04d}.png"
        path.write_bytes(_png(_face(len(sources))))
        sources.append(path)
    paths = PairSet(sources, [False, False], "folders")
    assert identities_from_folders(paths).tolist() == ["ann", "bob", "ann", "cid"]
    assert identities_from_folders(toy_set()) is None


def region_embed(x: Tensor) -> Tensor:
    """Sees only the top-left 2x2 block P (4 of 16 pixels) of a 4x4 image."""
    return x[:, :, :2, :2].flatten(1) - 0.5


def dpr_case():
    """Pair 0 genuine (A = B) patched on P with a stranger; pair 1 impostor patched on P with its own B."""
    g = torch.Generator().manual_seed(0)
    a, stranger, b1 = (torch.rand(1, 3, 4, 4, generator=g) for _ in range(3))
    clean_a, img_b = torch.cat([a, a]), torch.cat([a, b1])
    p = torch.zeros(4, 4, dtype=torch.bool)
    p[:2, :2] = True
    patched_a = torch.where(p, torch.cat([stranger, b1]), clean_a)
    return patched_a, clean_a, img_b, p, torch.tensor([True, False])


def test_dpr_perfect_map_restores_the_decision_fastest():
    patched_a, clean_a, img_b, p, labels = dpr_case()
    perfect = p.float().expand(2, -1, -1)
    aucs = {}
    noise = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(5))
    for name, good in (("perfect", perfect), ("random", noise), ("adversarial", 1 - perfect)):
        # The patched genuine pair is a non-match (dis map used), the patched impostor a match (sim map used);
        # the other map is the reverse ranking, so using the wrong one would be caught.
        sim = torch.stack([1 - good[0], good[1]])
        dis = torch.stack([good[0], 1 - good[1]])
        scores = dpr_scores(region_embed, patched_a, clean_a, img_b, sim, dis, threshold=0.5, steps=4,
                            seeds=tie_seeds(0, torch.arange(2)))
        assert scores.shape == (2, 5)
        metric = DPRMetric(threshold=0.5, steps=4)
        metric.update(scores, labels, torch.tensor([0, 1]))
        aucs[name] = metric.compute()
    assert aucs["perfect"]["fmr_auc"] == pytest.approx(12.5)  # FMR [1, 0, 0, 0, 0] over p = 0 .. 1
    assert aucs["perfect"]["fnmr_auc"] == pytest.approx(12.5)
    assert aucs["adversarial"]["fmr_auc"] == pytest.approx(87.5)  # [1, 1, 1, 1, 0]
    assert aucs["adversarial"]["fnmr_auc"] == pytest.approx(87.5)
    for rate in ("fmr", "fnmr"):
        assert aucs["perfect"][f"{rate}_auc"] <= aucs["random"][f"{rate}_auc"] <= aucs["adversarial"][f"{rate}_auc"]
        assert aucs["perfect"][f"{rate}_patched"] == 1.0 and aucs["perfect"][f"{rate}_original"] == 0.0


def test_error_curves_and_deduplication():
    scores = torch.tensor([[0.2, 0.9], [0.9, 0.9], [0.9, 0.1], [0.1, 0.1]])
    labels = torch.tensor([True, True, False, False])
    fmr, fnmr = error_curves(scores, labels, 0.5)
    assert fmr.tolist() == [0.5, 0.0] and fnmr.tolist() == [0.5, 0.0]
    single, padded = DPRMetric(0.5, steps=1), DPRMetric(0.5, steps=1)
    single.update(scores, labels, torch.arange(4))
    padded.update(scores[:3], labels[:3], torch.tensor([0, 1, 2]))
    padded.update(scores[[3, 0]], labels[[3, 0]], torch.tensor([3, 0]))
    assert padded.compute() == single.compute()
    assert single.compute()["fmr_auc"] == pytest.approx(25.0)
    per_pair = padded.per_pair()  # impostor 2 accepted then rejected: AUC 50; impostor 3 never: 0
    assert per_pair["fmr_auc"][0][per_pair["fmr_auc"][1]].tolist() == [50.0, 0.0]
    for name, (values, group) in per_pair.items():
        assert float(values[group].mean()) == pytest.approx(single.compute()[name])
    with pytest.raises(ValueError, match="scores must be"):
        single.update(scores[:, :1], labels, torch.arange(4))
