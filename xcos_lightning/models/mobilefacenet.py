"""MobileFaceNet with the parameter names of foamliu/MobileFaceNet (the shared ``mobilefacenet_128d.pt``).

Layout: ``conv1`` (3x3 s2 + BN + ReLU6), ``dw_conv`` (depthwise-separable 3x3), ``features.0..14``
(MobileNetV2 inverted residuals), ``conv2`` (1x1 -> 512 + BN + ReLU6, the ``512 x 7 x 7`` grid tap
point), ``gdconv`` (global depthwise 7x7 + BN), ``conv3`` (1x1 -> 128, bias) and ``bn`` -> 128-d.
Inputs are normalised with the ImageNet mean/std in RGB order, as the weights were trained.
"""
from __future__ import annotations

from torch import Tensor, nn

from xcos_lightning.errors import ModelSpecError
from xcos_lightning.models.normalize import InputNormalize
from xcos_lightning.models.registry import register_trunk
from xcos_lightning.weights_file import load_trunk_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# (expansion t, channels c, repeats n, first stride s) of the inverted-residual stages.
STAGES = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))


def _scaled(channels: int, width_mult: float) -> int:
    """Channels scaled by ``width_mult``, rounded to a multiple of 8 (at least 8)."""
    return max(8, int(channels * width_mult + 4) // 8 * 8)


class ConvBNReLU(nn.Sequential):
    """``Conv(k, stride, groups) + BN + ReLU6``; keys ``0`` (conv) and ``1`` (BN)."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )


class DepthwiseSeparableConv(nn.Module):
    """Depthwise 3x3 + BN + ReLU, then pointwise 1x1 + BN + ReLU: ``(B, cin, H, W) -> (B, cout, H, W)``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.depthwise(x)))
        return self.relu(self.bn2(self.pointwise(x)))


class GDConv(nn.Module):
    """Global depthwise conv (kernel = the whole 7x7 map) + BN: ``(B, C, 7, 7) -> (B, C, 1, 1)``."""

    def __init__(self, channels: int, kernel_size: int = 7) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, kernel_size, groups=channels, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.depthwise(x))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: expand 1x1 + BN + ReLU6, depthwise 3x3(stride) + BN + ReLU6, project 1x1 + BN;
    residual when ``stride == 1`` and ``cin == cout``. Keys ``conv.0`` .. ``conv.3``."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = int(round(cin * expansion))
        self.use_residual = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            ConvBNReLU(cin, hidden, kernel_size=1),
            ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileFaceNetTrunk(nn.Module):
    """MobileFaceNet up to ``conv2``: RGB ``(B, 3, 112, 112)`` in ``[0, 1]`` -> ``(B, out_channels, 7, 7)``.

    ``width_mult`` scales every channel count (1.0 = the pretrained layout, 512 output channels;
    e.g. 0.25 gives a 128-channel variant for CPU tests).
    """

    def __init__(self, width_mult: float = 1.0) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}")
        self.normalize = InputNormalize("rgb", IMAGENET_MEAN, IMAGENET_STD)
        stem = _scaled(64, width_mult)
        self.conv1 = ConvBNReLU(3, stem, stride=2)
        self.dw_conv = DepthwiseSeparableConv(stem, stem)
        blocks, cin = [], stem
        for t, c, n, s in STAGES:
            cout = _scaled(c, width_mult)
            for i in range(n):
                blocks.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        self.features = nn.Sequential(*blocks)
        self.out_channels = _scaled(512, width_mult)
        self.conv2 = ConvBNReLU(cin, self.out_channels, kernel_size=1)
        for m in self.modules():  # foamliu's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(B, 3, 112, 112)`` RGB in ``[0, 1]`` -> ``conv2`` map ``(B, out_channels, 7, 7)``, >= 0."""
        return self.conv2(self.features(self.dw_conv(self.conv1(self.normalize(x)))))


class MobileFaceNet(MobileFaceNetTrunk):
    """Full MobileFaceNet: RGB ``(B, 3, 112, 112)`` in ``[0, 1]`` -> embedding ``(B, embedding_dim)``.

    ``grid_tap(x)`` gives the ``conv2`` map ``(B, grid_channels, 7, 7)`` and ``embed_from_grid`` finishes
    the forward from it, so Grad-CAM style explainers can take gradients at the last 7x7 block.
    """

    HEAD_MODULES = ("gdconv", "conv3", "bn")  # top-level modules after the grid tap point

    def __init__(self, width_mult: float = 1.0, embedding_dim: int = 128) -> None:
        super().__init__(width_mult)
        self.grid_channels = self.out_channels
        self.embedding_dim = embedding_dim
        self.gdconv = GDConv(self.out_channels)
        self.conv3 = nn.Conv2d(self.out_channels, embedding_dim, 1)
        self.bn = nn.BatchNorm2d(embedding_dim)

    def grid_tap(self, x: Tensor) -> Tensor:
        """``(B, 3, 112, 112)`` RGB ``[0, 1]`` -> ``conv2`` map ``(B, grid_channels, 7, 7)``."""
        return super().forward(x)

    def embed_from_grid(self, grid: Tensor) -> Tensor:
        """``(B, grid_channels, 7, 7)`` -> embedding ``(B, embedding_dim)`` (not L2-normalised)."""
        return self.bn(self.conv3(self.gdconv(grid))).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, 112, 112)`` RGB in ``[0, 1]`` -> ``(B, embedding_dim)`` (not L2-normalised)."""
        return self.embed_from_grid(self.grid_tap(x))


@register_trunk("mobilefacenet")
def mobilefacenet(width_mult: float = 1.0, pretrained: str | None = None) -> MobileFaceNetTrunk:
    """MobileFaceNet trunk ``(B, 3, 112, 112) -> (B, out_channels, 7, 7)``; ``pretrained``: path to a file
    in the ``mobilefacenet_128d.pt`` layout whose weights initialise it (needs ``width_mult=1``)."""
    trunk = MobileFaceNetTrunk(width_mult)
    if pretrained is not None:
        if width_mult != 1.0:
            raise ModelSpecError(f"pretrained MobileFaceNet weights {pretrained} need width_mult=1, got {width_mult}")
        load_trunk_weights(trunk, MobileFaceNet(), pretrained, "mobilefacenet")
    return trunk
