"""IResNet (insightface ``arcface_torch``) with its exact parameter names.

Users hold ``backbone.pth`` files from arcface_torch; these classes reproduce its key layout so those
files load with ``strict=True``: ``conv1, bn1, prelu, layer1..4`` (``IBasicBlock``: ``bn1, conv1, bn2,
prelu, conv2, bn3, downsample.0/.1``), ``bn2`` (``512 x 7 x 7``), ``dropout``, ``fc`` (25088 -> 512),
``features`` (``BatchNorm1d`` with its weight fixed at 1).

``IResNetTrunk`` stops at ``bn2`` (the xCos grid tap point); ``IResNet`` adds the embedding head. The
input normaliser (RGB, mean = std = 0.5, as arcface_torch trains) has no ``state_dict`` entries.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from xcos_lightning.constants import GRID_SIZE
from xcos_lightning.errors import ModelSpecError
from xcos_lightning.models.normalize import InputNormalize
from xcos_lightning.models.registry import register_trunk
from xcos_lightning.weights_file import load_trunk_weights

IRESNET_LAYERS: dict[str, tuple[int, int, int, int]] = {
    "r18": (2, 2, 2, 2),
    "r34": (3, 4, 6, 3),
    "r50": (3, 4, 14, 3),
    "r100": (3, 13, 30, 3),
}


class IBasicBlock(nn.Module):
    """Pre-activation residual block: BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, plus the
    shortcut (``1x1 conv + BN`` when the shape changes). ``(B, inplanes, H, W) -> (B, planes, H/s, W/s)``."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-05)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-05)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-05)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                nn.BatchNorm2d(planes, eps=1e-05),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


class IResNetTrunk(nn.Module):
    """IResNet up to ``bn2``: RGB ``(B, 3, 112, 112)`` in ``[0, 1]`` -> ``(B, 8 * width, 7, 7)``.

    ``layers``: blocks per stage (see ``IRESNET_LAYERS``); ``width``: channels of the stem and first
    stage (64 upstream; e.g. 8 for fast tests), doubled at each of the 4 stride-2 stages.
    """

    def __init__(self, layers: Sequence[int], width: int = 64) -> None:
        super().__init__()
        if len(layers) != 4 or width < 1:
            raise ValueError(f"IResNet needs 4 stage depths and width >= 1, got layers={layers}, width={width}")
        self.normalize = InputNormalize("rgb", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width, eps=1e-05)
        self.prelu = nn.PReLU(width)
        inplanes = width
        for i, depth in enumerate(layers):
            planes = width * 2**i
            blocks = [IBasicBlock(inplanes, planes, stride=2)]
            blocks += [IBasicBlock(planes, planes) for _ in range(depth - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            inplanes = planes
        self.bn2 = nn.BatchNorm2d(inplanes, eps=1e-05)
        self.out_channels = inplanes
        for m in self.modules():  # arcface_torch's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(B, 3, 112, 112)`` RGB in ``[0, 1]`` -> ``bn2`` map ``(B, out_channels, 7, 7)``."""
        x = self.prelu(self.bn1(self.conv1(self.normalize(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.bn2(x)


class IResNet(IResNetTrunk):
    """Full arcface_torch IResNet: RGB ``(B, 3, 112, 112)`` in ``[0, 1]`` -> embedding ``(B, embedding_dim)``.

    ``grid_tap(x)`` gives the ``bn2`` map ``(B, grid_channels, 7, 7)`` and ``embed_from_grid`` finishes the
    forward from it, so Grad-CAM style explainers can take gradients at the last 7x7 block.
    """

    HEAD_MODULES = ("dropout", "fc", "features")  # top-level modules after the grid tap point

    def __init__(self, layers: Sequence[int], width: int = 64, embedding_dim: int = 512, dropout: float = 0.0) -> None:
        super().__init__(layers, width)
        self.grid_channels = self.out_channels
        self.embedding_dim = embedding_dim
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(self.out_channels * GRID_SIZE * GRID_SIZE, embedding_dim)
        self.features = nn.BatchNorm1d(embedding_dim, eps=1e-05)
        # arcface_torch freezes this scale at 1: the embedding is only shifted and variance-normalised.
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

    def grid_tap(self, x: Tensor) -> Tensor:
        """``(B, 3, 112, 112)`` RGB ``[0, 1]`` -> ``bn2`` map ``(B, grid_channels, 7, 7)``."""
        return super().forward(x)

    def embed_from_grid(self, grid: Tensor) -> Tensor:
        """``(B, grid_channels, 7, 7)`` -> embedding ``(B, embedding_dim)`` (not L2-normalised)."""
        return self.features(self.fc(self.dropout(torch.flatten(grid, 1))))

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, 112, 112)`` RGB in ``[0, 1]`` -> ``(B, embedding_dim)`` (not L2-normalised)."""
        return self.embed_from_grid(self.grid_tap(x))


def _trunk(arch: str, width: int, pretrained: str | None) -> IResNetTrunk:
    trunk = IResNetTrunk(IRESNET_LAYERS[arch], width)
    if pretrained is not None:
        if width != 64:
            raise ModelSpecError(f"pretrained arcface_torch weights {pretrained} need width=64, got width={width}")
        load_trunk_weights(trunk, IResNet(IRESNET_LAYERS[arch]), pretrained, f"arcface_torch-{arch}")
    return trunk


@register_trunk("iresnet18")
def iresnet18(width: int = 64, pretrained: str | None = None) -> IResNetTrunk:
    """IResNet-18 trunk ``(B, 3, 112, 112) -> (B, 8 * width, 7, 7)``; ``pretrained``: a ``backbone.pth``."""
    return _trunk("r18", width, pretrained)


@register_trunk("iresnet34")
def iresnet34(width: int = 64, pretrained: str | None = None) -> IResNetTrunk:
    """IResNet-34 trunk ``(B, 3, 112, 112) -> (B, 8 * width, 7, 7)``; ``pretrained``: a ``backbone.pth``."""
    return _trunk("r34", width, pretrained)


@register_trunk("iresnet50")
def iresnet50(width: int = 64, pretrained: str | None = None) -> IResNetTrunk:
    """IResNet-50 trunk ``(B, 3, 112, 112) -> (B, 8 * width, 7, 7)``; ``pretrained``: a ``backbone.pth``."""
    return _trunk("r50", width, pretrained)


@register_trunk("iresnet100")
def iresnet100(width: int = 64, pretrained: str | None = None) -> IResNetTrunk:
    """IResNet-100 trunk ``(B, 3, 112, 112) -> (B, 8 * width, 7, 7)``; ``pretrained``: a ``backbone.pth``."""
    return _trunk("r100", width, pretrained)
