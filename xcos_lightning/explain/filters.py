"""Gaussian smoothing of single-channel maps (xSSAB's final blur)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def gaussian_kernel1d(size: int, sigma: float) -> Tensor:
    """Gaussian taps ``(size,)`` summing to 1, centred on the middle tap (odd ``size``)."""
    offsets = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    taps = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return taps / taps.sum()


def gaussian_blur(maps: Tensor, size: int = 5, sigma: float = 5.0) -> Tensor:
    """Blur ``(B, H, W)`` maps with a normalised ``size x size`` Gaussian; output ``(B, H, W)``.

    Separable (rows then columns); reflect padding avoids a dark halo at the border.
    """
    if size % 2 == 0:
        raise ValueError(f"blur size must be odd to keep maps aligned, got {size}")
    taps = gaussian_kernel1d(size, sigma).to(maps)
    x = F.pad(maps[:, None], (size // 2,) * 4, mode="reflect")
    x = F.conv2d(x, taps.view(1, 1, 1, size))
    return F.conv2d(x, taps.view(1, 1, size, 1))[:, 0]
