"""PNG line plots of protocol curves (accuracy / FMR / FNMR vs fraction), drawn with PIL only."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from PIL import Image, ImageDraw, ImageFont

# Distinguishable on white and for the common colour-vision deficiencies (Okabe-Ito).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
Curve = tuple[Sequence[float], Sequence[float]]


def line_plot(curves: Mapping[str, Curve], path: str | Path, *, title: str = "", xlabel: str = "",
              ylabel: str = "", xlim: tuple[float, float] = (0.0, 1.0), ylim: tuple[float, float] = (0.0, 1.0),
              size: tuple[int, int] = (720, 480)) -> Path:
    """Write one PNG with a line per ``name -> (x, y)`` and a legend; returns ``path``.

    Points outside ``xlim`` x ``ylim`` are clamped to the frame; NaN points break a line.
    """
    width, height = size
    left, right, top, bottom = 64, 170, 36, 48  # room for tick labels, legend, title and x label
    x0, x1, y0, y1 = left, width - right, top, height - bottom
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=13)

    def to_px(x: float, y: float) -> tuple[float, float]:
        fx = (min(max(x, xlim[0]), xlim[1]) - xlim[0]) / (xlim[1] - xlim[0])
        fy = (min(max(y, ylim[0]), ylim[1]) - ylim[0]) / (ylim[1] - ylim[0])
        return x0 + fx * (x1 - x0), y1 - fy * (y1 - y0)

    for i in range(6):
        tx = xlim[0] + i * (xlim[1] - xlim[0]) / 5
        ty = ylim[0] + i * (ylim[1] - ylim[0]) / 5
        px, _ = to_px(tx, ylim[0])
        _, py = to_px(xlim[0], ty)
        draw.line([(px, y0), (px, y1)], fill="#e6e6e6")
        draw.line([(x0, py), (x1, py)], fill="#e6e6e6")
        draw.text((px, y1 + 6), f"{tx:g}", fill="black", font=font, anchor="mt")
        draw.text((x0 - 6, py), f"{ty:g}", fill="black", font=font, anchor="rm")
    draw.rectangle([x0, y0, x1, y1], outline="black")
    draw.text(((x0 + x1) / 2, 10), title, fill="black", font=font, anchor="mt")
    draw.text(((x0 + x1) / 2, height - 8), xlabel, fill="black", font=font, anchor="mb")
    label = Image.new("RGB", (max(1, int(draw.textlength(ylabel, font=font)) + 4), 18), "white")
    ImageDraw.Draw(label).text((2, 2), ylabel, fill="black", font=font)
    rotated = label.rotate(90, expand=True)
    image.paste(rotated, (8, int((y0 + y1 - rotated.height) / 2)))

    for n, (name, (xs, ys)) in enumerate(curves.items()):
        colour = PALETTE[n % len(PALETTE)]
        segment: list[tuple[float, float]] = []
        for x, y in list(zip(xs, ys)) + [(float("nan"), float("nan"))]:
            if x != x or y != y:  # NaN ends the current segment
                if len(segment) > 1:
                    draw.line(segment, fill=colour, width=2, joint="curve")
                for px, py in segment:
                    draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)
                segment = []
            else:
                segment.append(to_px(float(x), float(y)))
        ly = y0 + 8 + 20 * n
        draw.line([(x1 + 12, ly), (x1 + 36, ly)], fill=colour, width=3)
        draw.text((x1 + 42, ly), name, fill="black", font=font, anchor="lm")
    path = Path(path)
    image.save(path, format="PNG")
    return path
