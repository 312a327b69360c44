"""Plain PIL figures of pair explanations (no plotting library).

Layout of :func:`pair_figure`, every panel the same square size:

- top row: face A and face B; for xCos models with the 7 x 7 grid drawn on both, then the xCos panels of
  the paper: S (cell cosines, a blue-white-red diverging ramp centred on the decision threshold, so red
  cells pull the pair towards "same person") and W (attention, white to green from 0 to its maximum),
  each cell printed with its value and a colour bar below;
- one row per method: the similarity and dissimilarity maps of face A and face B, each blended over its
  face (50 % face, 50 % ``jet`` colour: dark blue = 0, dark red = 1 = the map's peak), with a shared
  colour bar in the header.

:func:`photo_figure` draws the same maps back onto the original photos of aligned faces, with every detected
face's box, index and landmarks.
:func:`xcos_figure` is the xCos paper's 4-panel figure of one pair (both faces with the 7 x 7 grid, S and W;
the training monitor's W&B figure), :func:`line_plot` the PNG line plots of protocol curves (accuracy / FMR /
FNMR vs fraction). Every figure of the package comes from this module.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

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
PANELS = ("similarity A", "similarity B", "dissimilarity A", "dissimilarity B")
GAP, BAR_H = 8, 10  # px between panels; height of a colour bar's strip


def font(size: int) -> ImageFont.ImageFont:
    """PIL's bundled scalable font at ``size`` px (its small bitmap font where FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or built without FreeType
        return ImageFont.load_default()


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


def face_with_grid(img: Tensor, cells: int, side: int) -> Image.Image:
    """Face ``(3, H, W)`` in ``[0, 1]`` as a ``side`` px square with the ``cells x cells`` grid drawn on it
    (the cells of S and W: the grid features' receptive-field centres tile the face this way)."""
    face = Image.fromarray(to_uint8(img)).resize((side, side), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(face)
    for k in range(1, cells):
        at = round(k * side / cells)
        draw.line([(at, 0), (at, side - 1)], fill=(255, 255, 255), width=1)
        draw.line([(0, at), (side - 1, at)], fill=(255, 255, 255), width=1)
    return face


def grid_image(grid: Tensor, ramp, lo: float, hi: float, side: int) -> Image.Image:
    """A ``7 x 7`` grid ``(h, w)`` as a ``side`` px square of coloured cells with their values printed."""
    values = grid.detach().float().cpu().numpy()
    cells = colorize((values - lo) / max(hi - lo, 1e-12), ramp)
    img = Image.fromarray(cells).resize((side, side), Image.Resampling.NEAREST)
    h, w = values.shape
    draw, text_font = ImageDraw.Draw(img), font(max(8, side // (3 * w)))
    for i in range(h):
        for j in range(w):
            text = f"{values[i, j]:.2f}".replace("0.", ".")
            left, top, right, bottom = draw.textbbox((0, 0), text, font=text_font)
            x, y = (j + 0.5) * side / w - (right - left) / 2, (i + 0.5) * side / h - (bottom - top) / 2
            dark = cells[i, j].astype(float) @ (0.299, 0.587, 0.114) < 128  # luma of the cell colour
            draw.text((x - left, y - top), text, fill=(255, 255, 255) if dark else (0, 0, 0), font=text_font)
    return img


def colour_bar(ramp, lo: float, hi: float, width: int, ticks: Sequence[float], size: int = 11) -> Image.Image:
    """A horizontal ``width`` px colour bar from ``lo`` to ``hi`` with the ``ticks`` values written below."""
    tick_font = font(size)
    bar = Image.new("RGB", (width, BAR_H + size + 4), "white")
    strip = colorize(np.tile(np.linspace(0.0, 1.0, width), (BAR_H, 1)), ramp)
    bar.paste(Image.fromarray(strip), (0, 0))
    draw = ImageDraw.Draw(bar)
    for value in ticks:
        x = round((value - lo) / max(hi - lo, 1e-12) * (width - 1))
        text = f"{value:.2f}"
        text_w = draw.textlength(text, font=tick_font)
        draw.line([(x, BAR_H - 3), (x, BAR_H)], fill=(0, 0, 0))
        draw.text((min(max(x - text_w / 2, 0), width - text_w), BAR_H + 1), text, fill=(0, 0, 0), font=tick_font)
    return bar


def pair_figure(img_a: Tensor, img_b: Tensor, explanations: Sequence[PairExplanation], *, title: str = "",
                xcos_grids: tuple[Tensor, Tensor] | None = None, threshold: float | None = None,
                scale: int = 2, index: int = 0) -> Image.Image:
    """Figure of pair ``index`` of each explanation: the faces (and xCos panels) on top, one row per method.

    Args:
        img_a, img_b: the pair's faces ``(3, H, W)`` in ``[0, 1]`` (as explained).
        explanations: one ``PairExplanation`` per method (of a batch holding the pair at ``index``).
        title: text at the top (score, threshold, decision; may hold several lines).
        xcos_grids: ``(S, W)`` ``(7, 7)`` of an xCos model: adds the grid on the faces and the S and W panels.
        threshold: centre of S's diverging colours, the decision threshold of the xCos score (0 if ``None``);
            S spans the threshold +- the largest distance of a cell from it, so the threshold is white.
        scale: integer upscaling of every panel (faces of 112 px become 224 px at the default 2).
    """
    h, w = img_a.shape[-2:]
    ph, pw = h * scale, w * scale
    label_font, title_font = font(9 + 2 * scale), font(10 + 2 * scale)
    text_h = 11 + 3 * scale  # height of one text line at label_font
    label_w = 7 * text_h  # the left column holding each row's method name and time
    bar_h = BAR_H + text_h + 4
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    title_h = GAP + int(measure.multiline_textbbox((0, 0), title, font=title_font)[3]) + GAP if title else GAP
    top_h = text_h + ph + (bar_h if xcos_grids is not None else 0) + GAP  # S and W get colour bars
    row_h = text_h + ph + GAP
    width = label_w + len(PANELS) * (pw + GAP)
    fig = Image.new("RGB", (width, title_h + top_h + text_h + len(explanations) * row_h + bar_h + GAP), "white")
    draw = ImageDraw.Draw(fig)
    if title:
        draw.multiline_text((GAP, GAP), title, fill=(0, 0, 0), font=title_font)
    face_a, face_b = to_uint8(img_a), to_uint8(img_b)

    def paste(panel: np.ndarray | Image.Image, x: int, y: int, label: str) -> None:
        img = panel if isinstance(panel, Image.Image) else Image.fromarray(panel)
        draw.text((x, y), label, fill=(0, 0, 0), font=label_font)
        fig.paste(img.resize((pw, ph), Image.Resampling.NEAREST), (x, y + text_h))

    col_x = [label_w + c * (pw + GAP) for c in range(len(PANELS))]
    y = title_h
    if xcos_grids is None:
        draw.text((GAP, y + text_h), "pair", fill=(0, 0, 0), font=label_font)
        paste(face_a, col_x[0], y, "face A")
        paste(face_b, col_x[1], y, "face B")
    else:
        s_grid, w_grid = (g.detach().float().cpu() for g in xcos_grids)
        centre = 0.0 if threshold is None else threshold
        spread = max(float((s_grid - centre).abs().max()), 1e-6)
        w_max = max(float(w_grid.max()), 1e-12)
        cells = s_grid.shape[-1]
        draw.multiline_text((GAP, y + text_h), "xCos\n(model's own\nexplanation)", fill=(0, 0, 0), font=label_font)
        paste(face_with_grid(img_a, cells, pw), col_x[0], y, f"face A, {cells}x{cells} grid")
        paste(face_with_grid(img_b, cells, pw), col_x[1], y, f"face B, {cells}x{cells} grid")
        paste(grid_image(s_grid, DIVERGING, centre - spread, centre + spread, pw), col_x[2], y,
              "S: cell cosines")
        paste(grid_image(w_grid, WHITE_GREEN, 0.0, w_max, pw), col_x[3], y, "W: attention")
        bar_y = y + text_h + ph + 2
        fig.paste(colour_bar(DIVERGING, centre - spread, centre + spread, pw, (centre - spread, centre, centre + spread),
                             size=text_h - 3), (col_x[2], bar_y))
        fig.paste(colour_bar(WHITE_GREEN, 0.0, w_max, pw, (0.0, w_max), size=text_h - 3), (col_x[3], bar_y))
    y += top_h
    for col, name in enumerate(PANELS):
        draw.text((col_x[col], y), name, fill=(0, 0, 0), font=label_font)
    y += text_h
    for e in explanations:
        draw.multiline_text((GAP, y), f"{e.method}\n{e.seconds:.2f} s", fill=(0, 0, 0), font=label_font)
        faces = (face_a, face_b, face_a, face_b)
        for col, (face, heat) in enumerate(zip(faces, (e.sim_a, e.sim_b, e.dis_a, e.dis_b))):
            fig.paste(Image.fromarray(overlay(face, heat[index])).resize((pw, ph), Image.Resampling.NEAREST),
                      (col_x[col], y))
        y += row_h
    draw.text((GAP, y), "map colour", fill=(0, 0, 0), font=label_font)
    fig.paste(colour_bar(JET, 0.0, 1.0, pw, (0.0, 0.5, 1.0), size=text_h - 3), (col_x[0], y + 2))
    draw.text((col_x[1], y), "each map scaled to its peak (1)", fill=(0, 0, 0), font=label_font)
    return fig


def draw_faces(photo: np.ndarray, faces: Sequence, chosen: int | None, scale: float = 1.0) -> Image.Image:
    """uint8 RGB photo ``(H, W, 3)`` with every detected face's box, index and five landmarks drawn (the chosen
    face in green, the others in orange); ``faces``: objects with ``box`` ``(x1, y1, x2, y2)`` and ``points``
    ``(5, 2)``; ``scale``: the factor the photo will be shown at (lines stay ~2 px wide there)."""
    img = Image.fromarray(photo)
    draw = ImageDraw.Draw(img)
    width = max(1, round(2 / scale))
    label_font = font(max(10, round(14 / scale)))
    for k, face in enumerate(faces):
        colour = (0, 200, 0) if k == chosen else (255, 140, 0)
        draw.rectangle(tuple(float(v) for v in face.box), outline=colour, width=width)
        draw.text((float(face.box[0]) + 2, float(face.box[1]) + 1), str(k), fill=colour, font=label_font)
        r = 2 / scale
        for x, y in face.points:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    return img


def photo_figure(photos: tuple[np.ndarray, np.ndarray], faces: tuple[Sequence, Sequence],
                 chosen: tuple[int, int], explanations: Sequence[PairExplanation],
                 back: Callable[[int, np.ndarray], tuple[np.ndarray, np.ndarray]], *, title: str = "",
                 side: int = 320, index: int = 0) -> Image.Image:
    """The maps of :func:`pair_figure` drawn back onto the original photos.

    Args:
        photos: the two uint8 RGB photos ``(H, W, 3)`` (any sizes).
        faces, chosen: every detected face per photo and the index of the one explained (see :func:`draw_faces`).
        explanations: one ``PairExplanation`` per method, maps ``(B, h, w)`` in ``[0, 1]`` on the aligned faces.
        back: ``back(side, face_map) -> (photo_map (H, W), inside (H, W) bool)``, the inverse warp of side
            ``0`` (A) or ``1`` (B); the map is blended only where the aligned face covers the photo.
        side: each panel fits a ``side`` x ``side`` box, aspect kept.
    """
    label_font, title_font = font(13), font(14)
    text_h = 17
    label_w = 7 * text_h
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    title_h = GAP + int(measure.multiline_textbbox((0, 0), title, font=title_font)[3]) + GAP if title else GAP
    fit = [min(side / p.shape[1], side / p.shape[0]) for p in photos]
    sizes = [(max(1, round(p.shape[1] * f)), max(1, round(p.shape[0] * f))) for p, f in zip(photos, fit)]
    row_h = text_h + max(h for _, h in sizes) + GAP
    width = label_w + len(PANELS) * (side + GAP)
    fig = Image.new("RGB", (width, title_h + row_h * (1 + len(explanations)) + GAP), "white")
    draw = ImageDraw.Draw(fig)
    if title:
        draw.multiline_text((GAP, GAP), title, fill=(0, 0, 0), font=title_font)
    col_x = [label_w + c * (side + GAP) for c in range(len(PANELS))]

    def paste(img: Image.Image, k: int, col: int, y: int, label: str) -> None:
        draw.text((col_x[col], y), label, fill=(0, 0, 0), font=label_font)
        fig.paste(img.resize(sizes[k], Image.Resampling.BILINEAR), (col_x[col], y + text_h))

    y = title_h
    draw.multiline_text((GAP, y + text_h), "photos\n(faces found,\nexplained one\nin green)", fill=(0, 0, 0),
                        font=label_font)
    for k in (0, 1):
        paste(draw_faces(photos[k], faces[k], chosen[k], fit[k]), k, k, y, f"photo {'AB'[k]}: {len(faces[k])} face(s)")
    y += row_h
    for e in explanations:
        draw.multiline_text((GAP, y + text_h), f"{e.method}\n{e.seconds:.2f} s", fill=(0, 0, 0), font=label_font)
        for col, (k, heat) in enumerate(zip((0, 1, 0, 1), (e.sim_a, e.sim_b, e.dis_a, e.dis_b))):
            photo_map, inside = back(k, heat[index].detach().float().cpu().numpy())
            blended = photos[k].copy()
            blended[inside] = overlay(photos[k], torch.from_numpy(photo_map))[inside]
            paste(Image.fromarray(blended), k, col, y, PANELS[col])
        y += row_h
    return fig


XCOS_TITLE_H, XCOS_HEADER_H, XCOS_GAP = 30, 16, 6  # px: title line, panel labels, between panels


def xcos_figure(img_a: Tensor, img_b: Tensor, s_grid: Tensor, w_grid: Tensor, threshold: float, *,
                title: str = "", side: int = 224) -> Image.Image:
    """The xCos paper's 4-panel figure: face A, face B (grid drawn), S, W of one pair, each ``side`` px square.

    S (cell cosines) uses a diverging ramp centred on the decision threshold, so red cells pull the pair
    towards "match" and blue cells towards "no match"; W (attention) runs white to green from 0 to its maximum.

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
    fig = Image.new("RGB", (XCOS_GAP + len(panels) * (side + XCOS_GAP),
                            XCOS_TITLE_H + XCOS_HEADER_H + side + XCOS_GAP), "white")
    draw, font = ImageDraw.Draw(fig), ImageFont.load_default()
    draw.text((XCOS_GAP, XCOS_GAP), title, fill=(0, 0, 0), font=font)
    for col, (panel, label) in enumerate(panels):
        x = XCOS_GAP + col * (side + XCOS_GAP)
        draw.text((x, XCOS_TITLE_H), label, fill=(0, 0, 0), font=font)
        fig.paste(panel, (x, XCOS_TITLE_H + XCOS_HEADER_H))
    return fig


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
