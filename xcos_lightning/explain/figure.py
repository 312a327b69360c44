"""Plain PIL figures of pair explanations (no plotting library): one row per method, faces and overlays.

Row layout: face A, face B, then the similarity and dissimilarity maps of each face blended over it
(50 % face, 50 % colour; a ``jet`` ramp, dark blue = 0, dark red = 1). For xCos models a last row
shows the 7 x 7 grids S (cell cosines, blue below the threshold, red above) and W (attention).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from xcos_lightning.explain.base import PairExplanation

# (position, RGB) anchors of matplotlib's "jet" and of a blue-white-red diverging ramp.
JET = ((0.0, (0, 0, 128)), (0.125, (0, 0, 255)), (0.375, (0, 255, 255)), (0.625, (255, 255, 0)),
       (0.875, (255, 0, 0)), (1.0, (128, 0, 0)))
DIVERGING = ((0.0, (33, 102, 172)), (0.5, (247, 247, 247)), (1.0, (178, 24, 43)))
WHITE_GREEN = ((0.0, (247, 252, 245)), (1.0, (0, 109, 44)))
PANELS = ("face A", "face B", "similarity A", "similarity B", "dissimilarity A", "dissimilarity B")
LABEL_W, TITLE_H, HEADER_H, GAP = 150, 44, 16, 6


def colorize(values: np.ndarray, ramp: Sequence[tuple[float, tuple[int, int, int]]] = JET) -> np.ndarray:
    """Values ``(H, W)`` in ``[0, 1]`` (clipped) -> uint8 RGB ``(H, W, 3)`` along a piecewise-linear ramp."""
    x = np.clip(values, 0.0, 1.0)
    stops = np.array([p for p, _ in ramp])
    colours = np.array([c for _, c in ramp], dtype=np.float64)
    rgb = np.stack([np.interp(x, stops, colours[:, c]) for c in range(3)], axis=-1)
    return rgb.round().astype(np.uint8)


def to_uint8(img: Tensor) -> np.ndarray:
    """Image ``(3, H, W)`` in ``[0, 1]`` -> uint8 RGB ``(H, W, 3)``."""
    return (img.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


def overlay(face: np.ndarray, heat: Tensor, alpha: float = 0.5) -> np.ndarray:
    """uint8 face ``(H, W, 3)`` blended with the ``jet`` colours of a map ``(H, W)`` in ``[0, 1]``."""
    colours = colorize(heat.detach().float().cpu().numpy())
    return ((1 - alpha) * face + alpha * colours).round().astype(np.uint8)


def grid_image(grid: Tensor, ramp, lo: float, hi: float, side: int) -> Image.Image:
    """A ``7 x 7`` grid ``(h, w)`` as a ``side`` px square of coloured cells with their values printed."""
    values = grid.detach().float().cpu().numpy()
    cells = colorize((values - lo) / max(hi - lo, 1e-12), ramp)
    img = Image.fromarray(cells).resize((side, side), Image.Resampling.NEAREST)
    draw, font = ImageDraw.Draw(img), ImageFont.load_default()
    h, w = values.shape
    for i in range(h):
        for j in range(w):
            text = f"{values[i, j]:.2f}".replace("0.", ".")
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            x, y = (j + 0.5) * side / w - (right - left) / 2, (i + 0.5) * side / h - (bottom - top) / 2
            dark = cells[i, j].astype(float) @ (0.299, 0.587, 0.114) < 128  # luma of the cell colour
            draw.text((x - left, y - top), text, fill=(255, 255, 255) if dark else (0, 0, 0), font=font)
    return img


def pair_figure(img_a: Tensor, img_b: Tensor, explanations: Sequence[PairExplanation], *, title: str = "",
                xcos_grids: tuple[Tensor, Tensor] | None = None, threshold: float | None = None,
                scale: int = 2, index: int = 0) -> Image.Image:
    """Figure of pair ``index`` of each explanation: one row per method, six labelled panels.

    Args:
        img_a, img_b: the pair's faces ``(3, H, W)`` in ``[0, 1]`` (as explained).
        explanations: one ``PairExplanation`` per method (of a batch holding the pair at ``index``).
        title: text line at the top (score, threshold, decision).
        xcos_grids: ``(S, W)`` ``(7, 7)`` of an xCos model, drawn as a last row; S's colours are centred
            on ``threshold`` (0 if ``None``), W's run from 0 to its maximum.
        scale: integer upscaling of every panel (faces of 112 px become 224 px at the default 2).
    """
    h, w = img_a.shape[-2:]
    ph, pw = h * scale, w * scale
    rows = len(explanations) + (xcos_grids is not None)
    fig = Image.new("RGB", (LABEL_W + len(PANELS) * (pw + GAP), TITLE_H + rows * (HEADER_H + ph + GAP)), "white")
    draw, font = ImageDraw.Draw(fig), ImageFont.load_default()
    draw.text((GAP, GAP), title, fill=(0, 0, 0), font=font)
    face_a, face_b = to_uint8(img_a), to_uint8(img_b)

    def paste(panel: np.ndarray | Image.Image, row: int, col: int, label: str) -> None:
        img = panel if isinstance(panel, Image.Image) else Image.fromarray(panel)
        x, y = LABEL_W + col * (pw + GAP), TITLE_H + row * (HEADER_H + ph + GAP)
        draw.text((x, y), label, fill=(0, 0, 0), font=font)
        fig.paste(img.resize((pw, ph), Image.Resampling.NEAREST), (x, y + HEADER_H))

    for row, e in enumerate(explanations):
        y = TITLE_H + row * (HEADER_H + ph + GAP) + HEADER_H
        draw.text((GAP, y), f"{e.method}\n{e.seconds:.2f} s", fill=(0, 0, 0), font=font)
        maps = (e.sim_a, e.sim_b, e.dis_a, e.dis_b)
        faces = (face_a, face_b, face_a, face_b)
        panels = [face_a, face_b] + [overlay(f, m[index]) for f, m in zip(faces, maps)]
        for col, (panel, label) in enumerate(zip(panels, PANELS)):
            paste(panel, row, col, label)
    if xcos_grids is not None:
        s_grid, w_grid = (g.detach().float().cpu() for g in xcos_grids)
        centre = 0.0 if threshold is None else threshold
        spread = max(float((s_grid - centre).abs().max()), 1e-6)
        row = len(explanations)
        y = TITLE_H + row * (HEADER_H + ph + GAP) + HEADER_H
        draw.text((GAP, y), "xCos grids", fill=(0, 0, 0), font=font)
        paste(grid_image(s_grid, DIVERGING, centre - spread, centre + spread, pw), row, 0,
              f"S (cos), centre {centre:g}")
        paste(grid_image(w_grid, WHITE_GREEN, 0.0, float(w_grid.max()), pw), row, 1, "W (attention)")
        paste(overlay(face_a, _upsampled(s_grid * w_grid, h, w)), row, 2, "S*W on A (scaled)")
        paste(overlay(face_b, _upsampled(s_grid * w_grid, h, w)), row, 3, "S*W on B (scaled)")
    return fig


def _upsampled(grid: Tensor, h: int, w: int) -> Tensor:
    """A ``(7, 7)`` grid as an ``(h, w)`` map in ``[0, 1]`` (min-max scaled, nearest cells)."""
    up = torch.nn.functional.interpolate(grid[None, None], size=(h, w), mode="nearest")[0, 0]
    return (up - up.min()) / (up.max() - up.min()).clamp_min(1e-12)
