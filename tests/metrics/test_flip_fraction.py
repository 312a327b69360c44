"""S-RISE flip fractions on hand-built embeddings with known answers."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from helpers.threads import one_torch_thread  # noqa: F401 (autouse fixture)
from xcos_lightning.metrics import FlipFractionMetric, flip_fractions
from xcos_lightning.metrics.faithfulness import fill_canvas, pixel_ranks, replaced_embeddings, tie_seeds


S2, S5 = tie_seeds(0, torch.arange(2)), tie_seeds(0, torch.arange(5))


def pixel00_embed(x: Tensor) -> Tensor:
    """2-D embedding that sees only channel 0 of pixel (0, 0): ``(x - 0.5, 0.1)``."""
    v = x[:, 0, 0, 0]
    return torch.stack([v - 0.5, torch.full_like(v, 0.1)], dim=1)


def four_pixel_pairs() -> tuple[Tensor, Tensor]:
    """2x2 images: pair 0 (A, A) matches, pair 1 (A, B) does not; A's channel 0 is [[1, 0], [0, 0]]
    (mean 0.25, so the mean fill moves pixel (0,0) to the other side of the threshold), B's is all 0."""
    a = torch.zeros(2, 3, 2, 2)
    a[:, 0, 0, 0] = 1.0
    b = a.clone()
    b[1, 0, 0, 0] = 0.0
    return a, b


@pytest.mark.parametrize("pattern, fraction", [
    ([[1.0, 0.0], [0.0, 0.0]], 0.25),  # pixel (0,0) first: one pixel flips the decision
    ([[0.5, 1.0], [0.0, 0.0]], 0.50),  # second
    ([[0.0, 1.0], [1.0, 1.0]], 1.00),  # last
])
def test_exact_fractions_on_four_pixels(pattern, fraction):
    a, b = four_pixel_pairs()
    maps = torch.tensor(pattern).expand(2, 2, 2)
    # steps=2 puts grid points at 0, 2 and 4 pixels: the bisection must find odd counts itself.
    flips = flip_fractions(pixel00_embed, a, b, maps, maps, threshold=0.5, steps=2, seeds=S2)
    assert flips.match.tolist() == [True, False]
    assert flips.deletion.tolist() == [fraction, fraction]
    assert flips.insertion.tolist() == [fraction, fraction]
    assert flips.deletion_flipped.all()


def test_map_is_chosen_by_clean_decision():
    a, b = four_pixel_pairs()
    good = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).expand(2, 2, 2)
    bad = torch.tensor([[0.0, 1.0], [1.0, 1.0]]).expand(2, 2, 2)
    flips = flip_fractions(pixel00_embed, a, b, sim_key=good, dis_key=bad, threshold=0.5, steps=4, seeds=S2)
    assert flips.deletion.tolist() == [0.25, 1.0]  # match uses the similarity map, non-match the dissimilarity one


def test_grid_resolution_without_refinement():
    a, b = four_pixel_pairs()
    maps = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).expand(2, 2, 2)
    flips = flip_fractions(pixel00_embed, a, b, maps, maps, threshold=0.5, steps=2, refine=False, seeds=S2)
    assert flips.deletion.tolist() == [0.5, 0.5]


def test_never_flipping_decision():
    a, b = four_pixel_pairs()

    def constant(x: Tensor) -> Tensor:
        return torch.ones(len(x), 2)

    maps = torch.rand(2, 2, 2)
    flips = flip_fractions(constant, a, b, maps, maps, threshold=0.5, steps=4, seeds=S2)
    assert flips.deletion.tolist() == [1.0, 1.0] and not flips.deletion_flipped.any()
    assert flips.insertion.tolist() == [0.0, 0.0]  # the canvas already gives the clean decision


def test_refined_count_is_a_pixel_exact_flip_point():
    g = torch.Generator().manual_seed(0)
    region = torch.zeros(16, 16, dtype=torch.bool)
    region[3:11, 4:12] = True
    a = torch.rand(5, 3, 16, 16, generator=g)
    b = (a + 0.05 * torch.randn(5, 3, 16, 16, generator=g)).clamp(0, 1)

    def embed(x: Tensor) -> Tensor:
        return x[:, :, region].flatten(1) - 0.5

    perfect = region.float().expand(5, -1, -1)
    fractions = {}
    for name, m in (("perfect", perfect), ("random", torch.rand(5, 16, 16, generator=g)), ("adversarial", 1 - perfect)):
        flips = flip_fractions(embed, a, b, m, m, threshold=0.5, steps=8, seeds=S5)
        assert flips.match.all()
        fractions[name] = (flips.deletion.mean(), flips.insertion.mean())
        if name == "random":
            counts = (flips.deletion * 256).round().long()
            ranks = pixel_ranks(m, S5)
            canvas = fill_canvas(a, "mean")
            emb = replaced_embeddings(embed, a, canvas, ranks, torch.stack([counts - 1, counts], 1))
            match = F.cosine_similarity(emb, embed(b)[:, None], dim=2) > 0.5
            assert match[:, 0].all() and not match[:, 1].any()
    assert fractions["perfect"][0] < fractions["random"][0] < fractions["adversarial"][0]
    assert fractions["perfect"][1] < fractions["random"][1] < fractions["adversarial"][1]
    assert fractions["perfect"][0] <= 0.25  # inside R, whose share of the image is 0.25


def test_metric_groups_and_deduplication():
    a, b = four_pixel_pairs()
    good = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).expand(2, 2, 2)
    bad = torch.tensor([[0.0, 1.0], [1.0, 1.0]]).expand(2, 2, 2)
    flips = flip_fractions(pixel00_embed, a, b, sim_key=good, dis_key=bad, threshold=0.5, steps=4, seeds=S2)
    metric = FlipFractionMetric()
    metric.update(flips, torch.tensor([0, 1]))
    metric.update(flips, torch.tensor([0, 1]))  # DDP padding repeats
    out = metric.compute()
    assert out["match/deletion"] == 0.25 and out["nonmatch/deletion"] == 1.0
    assert out["all/deletion"] == pytest.approx(0.625)
    assert out["all/pairs"] == 2 and out["match/pairs"] == 1
    assert out["match/average"] == pytest.approx(0.25)
    per_pair = metric.per_pair()  # one row per unique pair, averaging to compute()'s group means
    assert per_pair["match/deletion"][0].tolist() == [0.25, 1.0]
    for name, (values, group) in per_pair.items():
        assert float(values[group].mean()) == pytest.approx(out[name])
