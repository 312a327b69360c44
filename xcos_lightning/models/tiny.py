"""A narrow, fast CNN trunk for unit tests and smoke runs (about 15k parameters at the default width)."""
from __future__ import annotations

from torch import Tensor, nn

from xcos_lightning.models.normalize import InputNormalize
from xcos_lightning.models.registry import register_trunk


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.PReLU(cout))


class TinyTrunk(nn.Module):
    """Four stride-2 ``conv3x3 + BN + PReLU`` blocks: RGB ``(B, 3, 112, 112)`` in ``[0, 1]`` ->
    ``(B, channels, 7, 7)`` (widths ``channels/4, channels/2, channels, channels``)."""

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        if channels < 4:
            raise ValueError(f"channels must be >= 4, got {channels}")
        self.normalize = InputNormalize()
        widths = (3, channels // 4, channels // 2, channels, channels)
        self.body = nn.Sequential(*(_down(cin, cout) for cin, cout in zip(widths, widths[1:])))
        self.out_channels = channels

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(B, 3, 112, 112)`` RGB in ``[0, 1]`` -> ``(B, channels, 7, 7)``."""
        return self.body(self.normalize(x))


@register_trunk("tiny")
def tiny(channels: int = 32) -> TinyTrunk:
    """Tiny test trunk ``(B, 3, 112, 112) -> (B, channels, 7, 7)``."""
    return TinyTrunk(channels)
