"""The xCos paper's 4-panel figure of one pair: both faces with the 7 x 7 grid, S and W.

S (cell cosines) uses a diverging ramp centred on the decision threshold, so red cells pull the pair
towards "match" and blue cells towards "no match"; W (attention) runs white to green from 0 to its
maximum. Drawn with PIL only, from the tiles of ``xcos_lightning.explain.figure``.
"""
from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from xcos_lightning.explain.figure import DIVERGING, WHITE_GREEN, face_with_grid, grid_image

TITLE_H, HEADER_H, GAP = 30, 16, 6


def xcos_figure(img_a: Tensor, img_b: Tensor, s_grid: Tensor, w_grid: Tensor, threshold: float, *,
                title: str = "", side: int = 224) -> Image.Image:
    """Panels face A, face B (grid drawn), S, W of one pair, each ``side`` px square.

    Args:
        img_a, img_b: the faces ``(3, H, W)`` in ``[0, 1]``.
        s_grid: cell cosines S ``(7, 7)`` in ``[-1, 1]``; coloured symmetrically around ``threshold``
            (the spread is the largest distance of a cell from it, so the threshold is always white).
        w_grid: attention W ``(7, 7)``, non-negative, summing to 1.
        threshold: the xCos decision threshold.
        title: text line above the panels (score, decision).
    """
    s_grid, w_grid = s_grid.detach().float().cpu(), w_grid.detach().float().cpu()
    spread = max(float((s_grid - threshold).abs().max()), 1e-6)
    panels = [
        (face_with_grid(img_a, s_grid.shape[-1], side), "face A"),
        (face_with_grid(img_b, s_grid.shape[-1], side), "face B"),
        (grid_image(s_grid, DIVERGING, threshold - spread, threshold + spread, side),
         f"S (cos), centre {threshold:.3f}"),
        (grid_image(w_grid, WHITE_GREEN, 0.0, max(float(w_grid.max()), 1e-12), side), "W (attention)"),
    ]
    fig = Image.new("RGB", (GAP + len(panels) * (side + GAP), TITLE_H + HEADER_H + side + GAP), "white")
    draw, font = ImageDraw.Draw(fig), ImageFont.load_default()
    draw.text((GAP, GAP), title, fill=(0, 0, 0), font=font)
    for col, (panel, label) in enumerate(panels):
        x = GAP + col * (side + GAP)
        draw.text((x, TITLE_H), label, fill=(0, 0, 0), font=font)
        fig.paste(panel, (x, TITLE_H + HEADER_H))
    return fig
