"""Input normalisation that every face model applies inside its own ``forward``.

Data always travels as float32 RGB in ``[0, 1]``; each network turns it into what it was trained on
(colour order, mean/std), so explainers can mask and fill in plain pixel space.
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import Tensor, nn


class InputNormalize(nn.Module):
    """Map RGB ``[0, 1]`` images ``(B, 3, H, W)`` to a network's input: optional flip to BGR, then
    ``(x - mean) / std``.

    ``mean`` and ``std`` are given per channel in the network's own colour order (after the flip).
    They are non-persistent buffers: they follow ``.to(device)`` but stay out of ``state_dict``, so
    a model wrapping this keeps exactly the key layout of its upstream checkpoints and loads them with
    ``strict=True``. The constants come from the constructor, so nothing is lost by not saving them.
    """

    def __init__(
        self,
        color_order: Literal["rgb", "bgr"] = "rgb",
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
    ) -> None:
        super().__init__()
        if color_order not in ("rgb", "bgr"):
            raise ValueError(f"color_order must be 'rgb' or 'bgr', got {color_order!r}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values each, std > 0; got mean={mean}, std={std}")
        self.color_order = color_order
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(B, 3, H, W)`` RGB in ``[0, 1]`` -> ``(B, 3, H, W)`` normalised, network colour order."""
        if self.color_order == "bgr":
            x = x.flip(1)
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        mean, std = self.mean.flatten().tolist(), self.std.flatten().tolist()
        return f"color_order={self.color_order!r}, mean={mean}, std={std}"
