"""W&B media of one monitoring run: pair figures, xCos figures, a per-pair table and faithfulness curves.

Only built when the trainer has a ``WandbLogger``; other loggers get the scalars alone.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from torch import Tensor

from xcos_lightning.explain.base import PairExplanation
from xcos_lightning.explain.figure import line_plot, pair_figure, to_uint8, xcos_figure

Curve = tuple[list[float], list[float]]


@dataclass
class ShownPair:
    """A pair drawn in the figures and the table (on CPU).

    ``img_a``, ``img_b``: ``(3, H, W)`` in ``[0, 1]``; ``cos``/``xcos``: single-view scores in ``[-1, 1]``
    (``xcos`` ``None`` for models without attention); ``explanations``: method -> its ``PairExplanation``
    of this one pair (batch of 1); ``values``: method -> the pair's own faithfulness values.
    """

    index: int
    genuine: bool
    img_a: Tensor
    img_b: Tensor
    cos: float
    xcos: float | None
    explanations: dict[str, PairExplanation] = field(default_factory=dict)
    values: dict[str, dict[str, float]] = field(default_factory=dict)


def decision(score: float, threshold: float) -> str:
    return "match" if score > threshold else "no match"


def pair_title(pair: ShownPair, threshold_cos: float, threshold_xcos: float | None) -> str:
    kind = "genuine" if pair.genuine else "impostor"
    title = (f"pair {pair.index} ({kind}): cos {pair.cos:.3f} vs {threshold_cos:.3f} -> "
             f"{decision(pair.cos, threshold_cos)}")
    if pair.xcos is not None and threshold_xcos is not None:
        title += f"; xCos {pair.xcos:.3f} vs {threshold_xcos:.3f} -> {decision(pair.xcos, threshold_xcos)}"
    return title


def wandb_media(pairs: list[ShownPair], curves: dict[str, dict[str, Curve]], threshold_cos: float,
                threshold_xcos: float | None, prefix: str = "explain") -> dict[str, Any]:
    """``{key: wandb object}`` to pass to ``WandbLogger.log_metrics`` together with the scalars.

    Keys: ``<prefix>/overlays`` (one figure per pair: every method's similarity/dissimilarity maps over
    both faces), ``<prefix>/xcos_maps`` (the 4-panel xCos figures, when the model has attention),
    ``<prefix>/pairs`` (a Table: pair, label, faces, scores, decisions, figures and per-method values)
    and ``<prefix>/curves/<curve>`` (accuracy vs fraction, one line per method), from
    ``curves[method][curve]``.
    """
    import wandb

    media: dict[str, Any] = {}
    overlays, xcos_figs, rows = [], [], []
    methods = list(pairs[0].explanations) if pairs else []
    value_columns = [(m, k) for m in methods for k in (pairs[0].values.get(m, {}) if pairs else {})]
    for pair in pairs:
        title = pair_title(pair, threshold_cos, threshold_xcos)
        overlay = wandb.Image(pair_figure(pair.img_a, pair.img_b, list(pair.explanations.values()), title=title,
                                          scale=1), caption=title)
        overlays.append(overlay)
        xcos = pair.explanations.get("xcos")
        xcos_img = None
        if xcos is not None and threshold_xcos is not None:
            fig = xcos_figure(pair.img_a, pair.img_b, xcos.extras["S"][0], xcos.extras["W"][0], threshold_xcos,
                              title=title)
            xcos_img = wandb.Image(fig, caption=title)
            xcos_figs.append(xcos_img)
        row = [pair.index, "genuine" if pair.genuine else "impostor", wandb.Image(to_uint8(pair.img_a)),
               wandb.Image(to_uint8(pair.img_b)), pair.cos, decision(pair.cos, threshold_cos)]
        if threshold_xcos is not None:
            row += [pair.xcos, decision(pair.xcos, threshold_xcos) if pair.xcos is not None else None, xcos_img]
        rows.append(row + [overlay] + [pair.values[m][k] for m, k in value_columns])
    if pairs:
        columns = ["pair", "label", "face A", "face B", "cos", "decision"]
        if threshold_xcos is not None:
            columns += ["xcos", "xcos decision", "xcos maps"]
        columns += ["explanations"] + [f"{m}/{k}" for m, k in value_columns]
        media[f"{prefix}/overlays"] = overlays
        if xcos_figs:
            media[f"{prefix}/xcos_maps"] = xcos_figs
        media[f"{prefix}/pairs"] = wandb.Table(columns=columns, data=rows)
    for name, image in curve_images(curves).items():
        media[f"{prefix}/curves/{name}"] = wandb.Image(image, caption=name)
    return media


def curve_images(curves: dict[str, dict[str, Curve]]) -> dict[str, Image.Image]:
    """One PNG-drawn plot per curve name with a line per method, from ``curves[method][name]``."""
    names = sorted({name for per_method in curves.values() for name in per_method})
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            lines = {method: per_method[name] for method, per_method in curves.items() if name in per_method}
            path = line_plot(lines, Path(tmp) / f"{name}.png", title=name.replace("_", " "),
                             xlabel="fraction of pixels changed", ylabel="verification accuracy")
            with Image.open(path) as image:
                out[name] = image.copy()  # the file goes with the temporary folder
    return out
