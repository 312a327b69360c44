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
