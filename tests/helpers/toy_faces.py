"""A tiny embedding model and smooth random PNG 'faces' for end-to-end tests of the faithfulness engine."""
import io

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn


class TinyNet(nn.Module):
    """Two strided convolutions and a linear head: ``(B, 3, H, W)`` in [0, 1] -> ``(B, 16)``; seeded weights."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(128, 16))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x - 0.5))


def smooth_png(seed: int, resample: int = Image.BILINEAR, size: int = 48) -> bytes:
    """A smooth random 'face'; the same seed with another resampling filter is a near-identical other image."""
    low = np.random.default_rng(seed).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(low).resize((size, size), resample).save(buf, format="PNG")
    return buf.getvalue()
