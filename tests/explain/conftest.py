"""Tiny models, pairs and cheap explainer settings shared by the explainer tests (CPU, ms per forward)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from helpers.threads import one_torch_thread  # noqa: F401 (autouse fixture)
from xcos_lightning.explain import Explainer, create_explainer


class TinyEmbed(nn.Module):
    """(B, 3, H, W) in [0, 1] -> (B, 16); ``features`` ends in a 7x7 map at 112x112 (the Grad-CAM layer)."""

    def __init__(self, seed: int = 123) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.features = nn.Sequential(
                nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.PReLU(32),
            )
            self.pool = nn.AdaptiveAvgPool2d(7)  # keeps small test images (24x24) usable
            self.fc = nn.Linear(32 * 49, 16)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.features(x - 0.5)).flatten(1))


class FakeXCos:
    """Duck-typed xCos model: cell cosines of the tiny model's 7x7 features, attention from their norms."""

    def __init__(self, model: TinyEmbed) -> None:
        self.model = model

    def xcos_maps(self, img_a: Tensor, img_b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        fa, fb = self.model.features(img_a), self.model.features(img_b)
        cos_grid = F.cosine_similarity(fa, fb, dim=1)
        attention = torch.softmax((fa.norm(dim=1) + fb.norm(dim=1)).flatten(1), dim=1).view_as(cos_grid)
        return cos_grid, attention, (cos_grid * attention).sum((1, 2))


# Cheap settings per registered method; test_contract checks this table covers every registered name.
SMALL_KWARGS = {
    "corrrise": dict(n_masks=16),
    "srise": dict(n_masks=16, blobs=10),
    "rise": dict(n_masks=16),
    "occlusion": dict(patch_sizes=(28,), stride=14),
    "random": dict(seed=1),
    "xssab": dict(threshold=0.3),
    "gradcam": dict(),
    "gradcampp": dict(),
    "xcos": dict(),
}


def _make_explainer(name: str, model: TinyEmbed, **overrides) -> Explainer:
    kwargs = {**SMALL_KWARGS[name], **overrides}
    if name == "xcos":
        return create_explainer(name, model=FakeXCos(model), **kwargs)
    if name in ("gradcam", "gradcampp"):
        kwargs["target_layer"] = model.features
    return create_explainer(name, embed_fn=model, **kwargs)


def _make_pairs(b: int, size: int = 112, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Smooth random faces-to-be: low-res noise upsampled, so masks change the embedding gradually."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(2 * b, 3, 8, 8, generator=g)
    images = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return images[:b], images[b:]


@pytest.fixture(scope="module")
def model() -> TinyEmbed:
    return TinyEmbed().eval()


@pytest.fixture
def xcos_model(model) -> FakeXCos:
    return FakeXCos(model)


@pytest.fixture
def make_explainer():
    """``make_explainer(name, model, **overrides)``: a registered explainer with cheap test settings."""
    return _make_explainer


@pytest.fixture
def make_pairs():
    """``make_pairs(b, size=112, seed=0)``: two batches ``(b, 3, size, size)`` in [0, 1]."""
    return _make_pairs
