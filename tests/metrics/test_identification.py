"""Identification Deletion / Insertion (rank-1 accuracy) on hand-built galleries."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from helpers.threads import one_torch_thread  # noqa: F401 (autouse fixture)
from xcos_lightning.explain.base import Explainer, SideMaps
from xcos_lightning.metrics import IdentificationMetric, combine_maps, identification_correct, probe_maps, top_k_gallery
from xcos_lightning.metrics.faithfulness import tie_seeds
from xcos_lightning.metrics.identification import gallery_from_pairs, rank1_correct


def pixel00_embed(x: Tensor) -> Tensor:
    v = x[:, 0, 0, 0]
    return torch.stack([v - 0.5, torch.full_like(v, 0.1)], dim=1)


def test_top_k_and_rank1():
    gallery = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    probes = torch.tensor([[1.0, 0.1], [0.1, 1.0], [1.0, 0.9]])
    assert top_k_gallery(probes, gallery, 2).tolist() == [[0, 2], [1, 2], [2, 0]]
    ids = torch.tensor([7, 8, 9])
    assert rank1_correct(probes, torch.tensor([7, 9, 9]), gallery, ids).tolist() == [True, False, True]
    with pytest.raises(ValueError, match="top-k"):
        top_k_gallery(probes, gallery, 4)


@pytest.mark.parametrize("pattern, curve, deletion, insertion", [
    ([[1.0, 0.0], [0.0, 0.0]], [1, 0, 0, 0, 0], 12.5, 87.5),  # pixel (0,0) ranked first
    ([[0.0, 1.0], [1.0, 1.0]], [1, 1, 1, 1, 0], 87.5, 12.5),  # ranked last
])
def test_exact_auc_on_four_pixels(pattern, curve, deletion, insertion):
    # Gallery: identity 0 has pixel (0,0) = 1, identity 1 has 0. The probe (identity 0) is the gallery image;
    # deleting (zero fill) or not yet inserting pixel (0,0) makes it identity 1's nearest match.
    gallery = torch.zeros(2, 3, 2, 2)
    gallery[0, 0, 0, 0] = 1.0
    probes = gallery[:1].clone()
    maps = torch.tensor([pattern])
    d, i = identification_correct(pixel00_embed, probes, torch.tensor([0]), maps, pixel00_embed(gallery),
                                  torch.tensor([0, 1]), steps=4, fill="zero", seeds=tie_seeds(0, torch.tensor([0])))
    assert d.tolist() == [[bool(c) for c in curve]]
    assert i.tolist() == [[not c for c in curve]]
    metric = IdentificationMetric(steps=4)
    metric.update(d, i, torch.tensor([0]))
    out = metric.compute()
    assert out["deletion_auc"] == pytest.approx(deletion)
    assert out["insertion_auc"] == pytest.approx(insertion)
    assert out["rank1"] == 1.0 and out["probes"] == 1


class GalleryMapExplainer(Explainer):
    """Test double: the probe's similarity map is channel 0 of its partner (the gallery image)."""

    name = "gallery_map"

    def _explain(self, img_a: Tensor, img_b: Tensor):
        pos = img_b[:, 0] + 1e-3
        zero = torch.zeros_like(pos)
        return SideMaps(pos, zero), SideMaps(zero, zero), torch.zeros(len(img_a)), {}


def test_probe_maps_pair_each_probe_with_its_top_k():
    g = torch.Generator().manual_seed(0)
    gallery = torch.rand(5, 3, 6, 6, generator=g)
    probes = torch.rand(3, 3, 6, 6, generator=g)
    top = torch.tensor([[4, 0], [1, 2], [3, 3]])
    maps = probe_maps(GalleryMapExplainer(None), probes, gallery, top, pairs_per_call=4)
    assert maps.shape == (3, 2, 6, 6)
    for p in range(3):
        for k in range(2):
            expected = gallery[top[p, k], 0] + 1e-3
            assert torch.allclose(maps[p, k], expected / expected.max())
    assert torch.equal(combine_maps(maps, "top1"), maps[:, 0])
    assert torch.allclose(combine_maps(maps, "mean"), maps.mean(1))
    assert torch.equal(combine_maps(maps, "max"), maps.amax(1))
    with pytest.raises(ValueError, match="combine"):
        combine_maps(maps, "median")


def test_perfect_map_beats_random_beats_adversarial():
    g = torch.Generator().manual_seed(0)
    region = torch.zeros(16, 16, dtype=torch.bool)
    region[4:12, 4:12] = True

    def embed(x: Tensor) -> Tensor:
        return x[:, :, region].flatten(1) - 0.5

    gallery = torch.rand(6, 3, 16, 16, generator=g)
    ids = torch.arange(6)
    probes = (gallery + 0.1 * torch.randn(6, 3, 16, 16, generator=g)).clamp(0, 1)
    perfect = region.float().expand(6, -1, -1)
    aucs = {}
    for name, m in (("perfect", perfect), ("random", torch.rand(6, 16, 16, generator=g)), ("adversarial", 1 - perfect)):
        d, i = identification_correct(embed, probes, ids, m, embed(gallery), ids, steps=32, seeds=tie_seeds(0, ids))
        metric = IdentificationMetric(steps=32)
        metric.update(d, i, ids)
        metric.update(d[:2], i[:2], ids[:2])  # DDP padding repeats
        aucs[name] = metric.compute()
        assert aucs[name]["probes"] == 6 and aucs[name]["rank1"] == 1.0
    assert aucs["perfect"]["deletion_auc"] < aucs["random"]["deletion_auc"] < aucs["adversarial"]["deletion_auc"]
    assert aucs["perfect"]["insertion_auc"] > aucs["random"]["insertion_auc"] > aucs["adversarial"]["insertion_auc"]


def test_gallery_from_pairs_keeps_probes_out_of_the_gallery():
    # Pairs: 0 genuine (x1, x2), 1 genuine (x2, x3), 2 genuine (y1, y2), 3 impostor (x1, z1),
    # 4 genuine (v1, v2), 5 genuine (v2, v1).
    names = ["x1", "x2", "x2", "x3", "y1", "y2", "x1", "z1", "v1", "v2", "v2", "v1"]
    identities = np.array([n[0] for n in names])
    labels = np.array([True, True, True, False, True, True])
    split = gallery_from_pairs(names, labels, identities, np.array([0, 1, 2, 3]))
    assert [names[j] for j in split.probes] == ["x1", "x2", "y1"]  # image A of the chosen genuine pairs
    assert [names[j] for j in split.gallery] == ["x3", "y2", "z1"]  # no probe image, each image once
    codes = dict(zip(identities[split.gallery], split.gallery_ids))
    assert [codes[i] for i in identities[split.probes]] == split.probe_ids.tolist()
    # v1 and v2 are both probes, so no image of v is left in the gallery: they are dropped (closed set).
    closed = gallery_from_pairs(names, labels, identities, np.array([2, 4, 5]))
    assert [names[j] for j in closed.probes] == ["y1"] and [names[j] for j in closed.gallery] == ["y2"]
    with pytest.raises(ValueError, match="gallery"):
        gallery_from_pairs(names, labels, identities, np.array([3, 4, 5]))
