"""The xCos backbone: a registered trunk followed by the grid head (32x7x7 grid features)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xcos_lightning.models.registry import create_trunk


class GridHead(nn.Module):
    """``Conv1x1(C -> G) + BN + PReLU``: replaces the flatten+FC of a face CNN (xCos paper).

    Maps a trunk map ``(B, C, 7, 7)`` to grid features ``(B, G, 7, 7)``.
    """

    def __init__(self, in_channels: int, grid_channels: int = 32) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, grid_channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(grid_channels)
        self.prelu = nn.PReLU(grid_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.prelu(self.bn(self.conv(x)))


class GridBackbone(nn.Module):
    """Trunk + grid head. Input: RGB ``(B, 3, 112, 112)`` in ``[0, 1]`` (the trunk normalises).

    Args:
        trunk: registered trunk name (``mobilefacenet``, ``iresnet50``, ``tiny``, ``timm/<model>``, ...).
        grid_channels: channels G of the grid features (paper: 32).
        trunk_kwargs: keyword arguments of the trunk factory (width, pretrained file, ...).
        frozen: names of trunk submodules (``named_modules`` of the trunk, e.g. ``["conv1", "dw_conv",
            "features.0"]``; ``[""]`` = the whole trunk) that keep their weights: no gradients, and
            BatchNorm statistics fixed (they stay in eval mode under ``train()``). For fine-tuning a
            pretrained trunk on a small data set, and to skip their backward pass.
    """

    def __init__(self, trunk: str = "mobilefacenet", grid_channels: int = 32, trunk_kwargs: dict | None = None,
                 frozen: list[str] | None = None) -> None:
        super().__init__()
        # Recorded so a checkpoint can rebuild this part (see io/checkpoint.py).
        self.init_args = {"trunk": trunk, "grid_channels": grid_channels, "trunk_kwargs": dict(trunk_kwargs or {}),
                          "frozen": list(frozen or [])}
        self.trunk = create_trunk(trunk, **(trunk_kwargs or {}))
        self.head = GridHead(self.trunk.out_channels, grid_channels)
        self.grid_channels = grid_channels
        modules = dict(self.trunk.named_modules())
        unknown = [name for name in frozen or [] if name not in modules]
        if unknown:
            raise ValueError(f"frozen names {unknown} are not submodules of trunk {trunk!r} "
                             f"(top-level ones: {[n for n, _ in self.trunk.named_children()]})")
        self._frozen = [modules[name] for name in frozen or []]
        for module in self._frozen:
            module.requires_grad_(False)

    def train(self, mode: bool = True) -> GridBackbone:
        super().train(mode)
        for module in self._frozen:
            module.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        """Grid features ``(B, G, 7, 7)``."""
        return self.head(self.trunk(x))

    @property
    def embedding_dim(self) -> int:
        return self.grid_channels * 49

    def embed(self, x: Tensor) -> Tensor:
        """L2-normalised flattened grid ``(B, G*49)``: the identification embedding."""
        return grid_embedding(self(x))


def grid_embedding(grid: Tensor) -> Tensor:
    """Flatten grid features ``(B, G, h, w)`` and L2-normalise to ``(B, G*h*w)``."""
    return F.normalize(grid.flatten(1), dim=1)


def flip_grid(grid: Tensor) -> Tensor:
    """Grid of the horizontally flipped face: flip along WIDTH (the reference code flipped height, a bug)."""
    return torch.flip(grid, dims=[-1])


def create_backbone(name: str, grid_channels: int = 32, **trunk_kwargs) -> GridBackbone:
    """``timm``-style factory: ``create_backbone("iresnet50")`` -> trunk + grid head."""
    return GridBackbone(trunk=name, grid_channels=grid_channels, trunk_kwargs=trunk_kwargs)
