import math

import torch
import torch.nn.functional as F

from xcos_lightning.models.backbone import flip_grid
from xcos_lightning.models.xcos import (CorrelationAttention, LearnedAttention, UniformAttention, patched_cosine,
                                        xcos_score)


def test_patched_cosine_matches_per_cell_cosine():
    a, b = torch.randn(2, 32, 7, 7), torch.randn(2, 32, 7, 7)
    s = patched_cosine(a, b)
    assert s.shape == (2, 7, 7)
    ref = F.cosine_similarity(a[1, :, 3, 5], b[1, :, 3, 5], dim=0)
    assert torch.allclose(s[1, 3, 5], ref, atol=1e-6)


def test_learned_attention_is_a_distribution_and_xcos_is_the_inner_product():
    att = LearnedAttention(32)
    a, b = torch.randn(3, 32, 7, 7), torch.randn(3, 32, 7, 7)
    w = att(a, b)
    assert w.shape == (3, 7, 7) and (w >= 0).all()
    assert torch.allclose(w.flatten(1).sum(1), torch.ones(3), atol=1e-5)
    # A pair of identical grids has S = 1 everywhere, so xCos = 1 whatever W is.
    assert torch.allclose(xcos_score(patched_cosine(a, a), att(a, a)), torch.ones(3), atol=1e-5)


def test_xcos_score_of_known_cell_angles():
    """Cell (i, j) of grid b is grid a's vector turned by theta_ij (any lengths): S_ij = cos(theta_ij), and
    xCos is sum_ij W_ij cos(theta_ij), here summed in plain Python."""
    theta = torch.linspace(0.0, math.pi, 49, dtype=torch.float64).view(7, 7)
    a = 3.0 * torch.stack([torch.ones(7, 7), torch.zeros(7, 7)]).double()[None]
    b = 0.5 * torch.stack([torch.cos(theta), torch.sin(theta)])[None]
    w = torch.arange(1.0, 50.0, dtype=torch.float64).view(1, 7, 7) / 1225.0
    s = patched_cosine(a, b)
    torch.testing.assert_close(s[0].double(), torch.cos(theta), atol=1e-6, rtol=0)  # computed in float32
    expected = sum(w[0, i, j].item() * math.cos(theta[i, j].item()) for i in range(7) for j in range(7))
    assert abs(xcos_score(s, w.float()).item() - expected) < 1e-6


def test_uniform_attention_gives_mean_cell_cosine():
    a, b = torch.randn(2, 8, 7, 7), torch.randn(2, 8, 7, 7)
    s = patched_cosine(a, b)
    assert torch.allclose(xcos_score(s, UniformAttention()(a, b)), s.mean((1, 2)), atol=1e-6)


def test_correlation_attention_weights_informative_cells():
    torch.manual_seed(0)
    teacher = torch.rand(500) * 2 - 1
    cos_maps = torch.rand(500, 7, 7) * 2 - 1  # noise everywhere ...
    cos_maps[:, 2, 3] = teacher + 0.05 * torch.randn(500)  # ... except one informative cell
    att = CorrelationAttention()
    w = att.fit(cos_maps, teacher)
    assert torch.isclose(w.sum(), torch.tensor(1.0))
    assert w.argmax().item() == 2 * 7 + 3
    assert "weights" in att.state_dict()  # saved with the model
    assert torch.equal(att(torch.zeros(4, 32, 7, 7), None), w.expand(4, 7, 7))


def test_flip_grid_flips_width():
    g = torch.arange(49.0).view(1, 1, 7, 7)
    assert torch.equal(flip_grid(g)[0, 0, 0], torch.arange(6.0, -1, -1))
