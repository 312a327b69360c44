"""A model that only looks at region R: the maps of a genuine pair must point inside R."""
import pytest
import torch
import torch.nn.functional as F

from xcos_lightning.explain import create_explainer

ROWS, COLS = slice(24, 56), slice(56, 88)


def region_embed(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, 112, 112) -> (B, 48): 8x8-pooled, centred pixels of R only; everything else is ignored."""
    return F.avg_pool2d(x[:, :, ROWS, COLS] - 0.5, 8).flatten(1)


@pytest.mark.parametrize("name,kwargs", [
    ("corrrise", dict(n_masks=64)),
    ("corrrise", dict(n_masks=64, recipe="transcription", correlation="spearman")),
    ("occlusion", dict(patch_sizes=(14,), stride=7)),
    ("rise", dict(n_masks=64)),
    ("srise", dict(n_masks=64)),
    ("xssab", dict()),
])
def test_similarity_points_inside_region(name, kwargs):
    g = torch.Generator().manual_seed(0)
    img_a = torch.rand(2, 3, 112, 112, generator=g)
    img_b = (img_a + 0.1 * torch.randn(img_a.shape, generator=g)).clamp(0, 1)  # genuine pair
    inside = torch.zeros(112, 112, dtype=torch.bool)
    inside[ROWS, COLS] = True
    out = create_explainer(name, embed_fn=region_embed, **kwargs)(img_a, img_b)
    for sim in (out.sim_a, out.sim_b):
        peaks = sim.flatten(1).argmax(1)
        assert inside.flatten()[peaks].all(), "pointing game: the most similar pixel must lie in R"
        assert (sim[:, inside].mean(1) > 3 * sim[:, ~inside].mean(1)).all()


def pooled_embed(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, 112, 112) -> (B, 588): 16x16-pooled, centred pixels; every region counts."""
    return F.avg_pool2d(x - 0.5, 16).flatten(1)


@pytest.mark.parametrize("name", ["corrrise", "rise"])
def test_partner_fill_reveals_a_dark_occluder(name):
    """B = A with a black square: hiding it with black changes nothing, showing A's pixels there does."""
    g = torch.Generator().manual_seed(0)
    img_a = 0.3 + 0.4 * torch.rand(2, 3, 112, 112, generator=g)
    img_b = img_a.clone()
    img_b[:, :, 32:64, 48:80] = 0.0
    inside = torch.zeros(112, 112, dtype=torch.bool)
    inside[32:64, 48:80] = True
    partner = create_explainer(name, embed_fn=pooled_embed, n_masks=128, fill="partner")(img_a, img_b)
    assert inside.flatten()[partner.dis_b.flatten(1).argmax(1)].all(), "the most dissimilar pixel lies in the square"
    black = create_explainer(name, embed_fn=pooled_embed, n_masks=128)(img_a, img_b)
    # Black fill: masking the square is a no-op, so the square gets no dissimilarity of its own.
    assert (black.dis_b[:, inside].mean(1) < partner.dis_b[:, inside].mean(1) / 3).all()
    with pytest.raises(ValueError, match="partner"):
        create_explainer(name, embed_fn=pooled_embed, fill="mean")
