"""``explain.py pair``: explain one face pair with several methods and draw them in one figure.

    explain.py pair a.jpg b.png --model mobilefacenet:../shared/weights/mobilefacenet_128d.pt \\
        --methods corrrise,xssab,gradcam --threshold 0.3 --out pair.png [--json] [--n-masks 500]
    explain.py pair a.jpg b.jpg --model runs/xcos/checkpoints/last.ckpt --methods xcos,corrrise \\
        --threshold 0.3 --xcos-threshold 0.25 --out pair.png

- Images: any format PIL reads (JPEG, PNG, BMP, TIFF, WebP, GIF, ...), any size. Grayscale (8 or 16 bit)
  becomes 3 equal RGB channels, palette images become RGB, an alpha channel is dropped, and the EXIF
  orientation of camera photos is applied. Each image is centre-cropped to the largest centred square
  (``--crop PX``: a PX x PX square around the centre instead), then resized to ``--size`` (112, the models'
  template), bilinear. Faces should be roughly aligned (eyes level, face filling the crop) as in the training
  data; for the 250 x 250 deep-funneled LFW images ``--crop 120`` is the ``lfw:`` protocol of ``verify``.
- ``--model``: a ``.ckpt`` of this framework, ``<format>:<path>`` or ``module:function`` (see ``explain.py
  verify``).
- Score: cosine of the two embeddings (what the post-hoc methods explain); xCos models also print their
  xCos score. Decision: ``same person`` when the cosine is above ``--threshold`` (and for xCos models when
  the xCos score is above ``--xcos-threshold``, default ``--threshold``); without it no decision is made
  (``explain.py verify`` reports a model's EER threshold on a pair set: ``EER thr``).
- ``--methods``: any of ``explain.py``'s explainers (corrrise, rise, srise, occlusion, xssab, gradcam,
  gradcampp, random; xcos for xCos checkpoints). Grad-CAM explains the model's last 7x7 block, found
  automatically (``default_target_layer``). ``--n-masks`` sets N of the mask methods.
- ``--out``: the figure (PNG or any format PIL writes, by extension): a top row with face A and face B (xCos
  models: with the 7x7 grid drawn, then S with a diverging colour map centred on the xCos threshold and W
  with a sequential one, as in the xCos paper), then per method a row with the similarity and dissimilarity
  maps of both faces over them (``xcos_lightning.explain.figure``). ``--json`` prints ``{"score",
  "xcos_score", "threshold", "xcos_threshold", "same", "same_xcos", "decision", "methods": {name:
  {"seconds"}}, ...}`` as the last line of stdout.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import numpy as np
from PIL import Image, ImageOps
from torch import Tensor, nn

from xcos_lightning.datamodules.image_io import open_image, prepare, to_tensor
from xcos_lightning.errors import DataFormatError, ModelSpecError
from xcos_lightning.explain.base import Explainer, PairExplanation
from xcos_lightning.explain.figure import pair_figure
from xcos_lightning.explain.registry import create_explainer, list_explainers
from xcos_lightning.models.spec import load_model

MASK_METHODS = ("corrrise", "rise", "srise")  # take --n-masks
HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # 16/32-bit grayscale


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``pair`` on an ``argparse`` subparsers object."""
    parser = subparsers.add_parser("pair", help="explain one face pair with several methods, as a figure",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("img_a", type=Path, help="first face image (any format PIL reads)")
    parser.add_argument("img_b", type=Path, help="second face image")
    parser.add_argument("--model", required=True, help="model SPEC: run.ckpt or <format>:<path>")
    parser.add_argument("--methods", required=True, help="comma-separated explainers, e.g. corrrise,xssab,gradcam")
    parser.add_argument("--out", required=True, type=Path, help="figure file (.png)")
    parser.add_argument("--threshold", type=float, default=None, help="cosine decision threshold (default: none)")
    parser.add_argument("--xcos-threshold", type=float, default=None,
                        help="xCos-score decision threshold of xCos models, S's colour centre (default: --threshold)")
    parser.add_argument("--n-masks", type=int, default=None,
                        help=f"masks for {', '.join(MASK_METHODS)} (default: the method's own, 500)")
    parser.add_argument("--crop", type=int, default=None,
                        help="side of the centred square cut before resizing (default: the largest)")
    parser.add_argument("--size", type=int, default=112, help="face side in px fed to the model (default 112)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:i] (default auto)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of torch (default: torch's; 1 is fastest on a busy machine)")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON line at the end")
    return parser


def load_face(path: Path, size: int, crop: int | None) -> Tensor:
    """Image file -> ``(3, size, size)`` float RGB in ``[0, 1]``: EXIF orientation applied, centre square
    (``crop`` px, default the largest), resized to ``size``."""
    if not path.is_file():
        raise DataFormatError(f"image {path} does not exist")
    img = open_image(path, str(path))  # decodes, or raises a DataFormatError naming the file
    with Image.open(path) as raw:
        if raw.mode in HIGH_DEPTH_MODES:  # PIL's RGB conversion clips these at 255: scale to 8 bit instead
            values = np.asarray(raw, dtype=np.float64)
            peak = 65535.0 if values.max() > 255 else 255.0
            img = Image.fromarray((values.clip(0, peak) * (255 / peak)).round().astype(np.uint8)).convert("RGB")
            img.info["exif"] = raw.info.get("exif", b"")
    img = ImageOps.exif_transpose(img)  # camera photos store their rotation as an EXIF tag
    return to_tensor(prepare(img, size, crop or min(img.size), where=str(path)))


def parse_methods(text: str, model: nn.Module) -> list[str]:
    methods = list(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    unknown = sorted(set(methods) - set(list_explainers()))
    if not methods or unknown:
        raise DataFormatError(f"--methods {text!r}: unknown or missing methods {unknown or methods}; "
                              f"choose from {list_explainers()}")
    if "xcos" in methods and not getattr(model, "has_xcos", False):
        raise ModelSpecError("method 'xcos' needs an xCos checkpoint (trained with the xCos head); "
                             f"{type(model).__name__} has none")
    return methods


def build_explainer(name: str, model: nn.Module, args: argparse.Namespace) -> Explainer:
    if name == "xcos":
        threshold = args.threshold if args.xcos_threshold is None else args.xcos_threshold
        return create_explainer(name, model=model, threshold=threshold)
    kwargs = {"n_masks": args.n_masks} if name in MASK_METHODS and args.n_masks is not None else {}
    # Grad-CAM finds the model's last 7x7 block itself (default_target_layer).
    return create_explainer(name, embed_fn=model, threshold=args.threshold, **kwargs)


def log(message: str) -> None:
    print(f"[pair] {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Explain ``img_a`` vs ``img_b`` with every method, save the figure; 0 on success."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    img_a, img_b = (load_face(p, args.size, args.crop)[None].to(device) for p in (args.img_a, args.img_b))
    model = load_model(args.model).to(device).eval()
    methods = parse_methods(args.methods, model)
    with torch.no_grad():
        score = float(F.cosine_similarity(model(img_a).float(), model(img_b).float(), dim=1))
        grids = model.xcos_maps(img_a, img_b) if getattr(model, "has_xcos", False) else None
    xcos = None if grids is None else float(grids[2])
    xcos_threshold = args.threshold if args.xcos_threshold is None else args.xcos_threshold
    same = None if args.threshold is None else score > args.threshold
    same_xcos = None if xcos is None or xcos_threshold is None else xcos > xcos_threshold
    decision = _decision(same)

    explanations: list[PairExplanation] = []
    timings: dict[str, dict[str, float]] = {}
    for name in methods:
        start = time.perf_counter()
        with build_explainer(name, model, args) as explainer:
            explanation = explainer(img_a, img_b)
        explanations.append(explanation)
        timings[name] = {"seconds": explanation.seconds, "seconds_total": time.perf_counter() - start,
                         "score": float(explanation.score[0])}
        log(f"{name}: {explanation.seconds:.2f} s")

    threshold_text = "none" if args.threshold is None else f"{args.threshold:.4f}"
    lines = [f"{args.img_a.name} vs {args.img_b.name}",
             f"cosine {score:.4f}, threshold {threshold_text}: {decision}"]
    if xcos is not None:
        xcos_text = "none" if xcos_threshold is None else f"{xcos_threshold:.4f}"
        lines.append(f"xCos {xcos:.4f}, threshold {xcos_text}: {_decision(same_xcos)}")
    lines.append(f"model {args.model}")
    figure = pair_figure(img_a[0], img_b[0], explanations, title="\n".join(lines), threshold=xcos_threshold,
                         xcos_grids=None if grids is None else (grids[0][0], grids[1][0]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        figure.save(args.out)
    except (ValueError, OSError) as exc:  # unknown extension, unwritable path
        raise DataFormatError(f"cannot write the figure to {args.out} ({exc}); use a .png path") from exc

    print(f"score (cosine): {score:.4f}" + ("" if xcos is None else f"; xCos score: {xcos:.4f}"))
    print(f"threshold: {threshold_text}" + ("" if xcos is None else f"; xCos threshold: {xcos_text}"))
    print(f"decision: {decision}" + ("" if xcos is None else f"; xCos decision: {_decision(same_xcos)}"))
    for name, t in timings.items():
        print(f"{name}: {t['seconds']:.2f} s")
    print(f"figure: {args.out}")
    if args.json:
        print(json.dumps({"score": score, "xcos_score": xcos, "threshold": args.threshold,
                          "xcos_threshold": xcos_threshold if xcos is not None else None, "same": same,
                          "same_xcos": same_xcos, "decision": decision, "methods": timings, "model": args.model,
                          "figure": str(args.out), "size": args.size, "crop": args.crop}))
    return 0


def _decision(same: bool | None) -> str:
    return "undecided (no threshold)" if same is None else ("same person" if same else "different persons")
