"""xCos: patched cosine map S, attention W and the explainable score xCos = <S, W>."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def patched_cosine(grid_a: Tensor, grid_b: Tensor) -> Tensor:
    """Cell-wise cosine S ``(B, h, w)`` in [-1, 1] between grid features ``(B, G, h, w)``."""
    return F.cosine_similarity(grid_a.float(), grid_b.float(), dim=1, eps=1e-8)


def xcos_score(cos_map: Tensor, weights: Tensor) -> Tensor:
    """Frobenius inner product ``sum(S * W)``: ``(B, h, w) x (B, h, w) -> (B,)``."""
    return (cos_map * weights).flatten(1).sum(1)


def _conv_bn_prelu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.PReLU(cout))


class LearnedAttention(nn.Module):
    """The paper's attention ("L"): shared conv on each face, fused, softmax over the cells.

    Input two grids ``(B, G, h, w)``; output W ``(B, h, w)``, non-negative, each map summing to 1.
    """

    def __init__(self, grid_channels: int = 32, hidden: int = 16, temperature: float = 1.0) -> None:
        super().__init__()
        self.init_args = {"grid_channels": grid_channels, "hidden": hidden, "temperature": temperature}
        self.shared = _conv_bn_prelu(grid_channels, hidden)
        self.fuse = nn.Sequential(_conv_bn_prelu(2 * hidden, hidden), _conv_bn_prelu(hidden, 1))
        self.temperature = temperature

    def forward(self, grid_a: Tensor, grid_b: Tensor) -> Tensor:
        fused = self.fuse(torch.cat([self.shared(grid_a), self.shared(grid_b)], dim=1))
        logits = fused.flatten(1).float() / self.temperature
        return logits.softmax(dim=1).view(grid_a.shape[0], *grid_a.shape[2:])


class UniformAttention(nn.Module):
    """Variant "U": W = 1/(h*w) everywhere, so xCos is the mean cell cosine."""

    init_args: dict = {}

    def forward(self, grid_a: Tensor, grid_b: Tensor) -> Tensor:
        b, _, h, w = grid_a.shape
        return grid_a.new_full((b, h, w), 1.0 / (h * w), dtype=torch.float32)


class CorrelationAttention(nn.Module):
    """Variant "P": fixed weights ``(h, w)``, the per-cell Pearson correlation between the cell cosine and the
    teacher cosine over training pairs (see ``fit``), clipped at 0 and summing to 1 (the xCos paper, eq. 6).

    ``grid_size``: the trunk's grid (an int for a square one). ``XCosModule`` fits the weights at the start of
    every training epoch from ``fit_pairs`` training pairs (default 1,024: a correlation's standard error is
    at most ``1/sqrt(N)``, about 0.03); until then they are uniform (variant "U"). ``weights`` is a buffer, so
    checkpoints keep them.
    """

    def __init__(self, grid_size: int | tuple[int, int] = 7, fit_pairs: int = 1024) -> None:
        super().__init__()
        if fit_pairs < 2:
            raise ValueError(f"CorrelationAttention fit_pairs={fit_pairs}: a correlation needs at least 2 pairs")
        self.init_args = {"grid_size": grid_size, "fit_pairs": fit_pairs}
        self.fit_pairs = fit_pairs
        h, w = (grid_size, grid_size) if isinstance(grid_size, int) else grid_size
        self.register_buffer("weights", torch.full((h, w), 1.0 / (h * w)))

    def forward(self, grid_a: Tensor, grid_b: Tensor) -> Tensor:
        return self.weights.expand(grid_a.shape[0], -1, -1)

    @torch.no_grad()
    def fit(self, cos_maps: Tensor, teacher_cos: Tensor) -> Tensor:
        """Set the weights from cell cosines ``(N, h, w)`` in [-1, 1] and teacher cosines ``(N,)`` of N training
        pairs.

        Negative correlations are clipped to 0 (a cell that disagrees with the teacher gets no say);
        the weights are normalised to sum to 1. Returns the ``(h, w)`` weights.
        """
        if cos_maps.shape[1:] != self.weights.shape:
            raise ValueError(f"correlation attention of grid_size {tuple(self.weights.shape)} got cell cosines of "
                             f"shape {tuple(cos_maps.shape[1:])}: set grid_size to the trunk's grid")
        if cos_maps.shape[0] < 2:
            raise ValueError(f"correlation attention needs at least 2 training pairs, got {cos_maps.shape[0]}")
        x = cos_maps.flatten(1).double()
        y = teacher_cos.double()
        xc, yc = x - x.mean(0), y - y.mean()
        corr = (xc * yc[:, None]).sum(0) / (xc.norm(dim=0) * yc.norm()).clamp_min(1e-12)
        w = corr.clamp_min(0)
        if w.sum() <= 0:
            raise ValueError("no grid cell correlates positively with the teacher; cannot fit attention")
        self.weights.copy_((w / w.sum()).view_as(self.weights).float())
        return self.weights.clone()
