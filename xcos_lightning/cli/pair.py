"""``explain.py pair``: explain one face pair with several methods and draw them in one figure.

    explain.py pair a.jpg b.png --model mobilefacenet:../shared/weights/mobilefacenet_128d.pt \\
        --methods corrrise,xssab,gradcam --threshold 0.3 --out pair.png [--json] [--n-masks 500]
    explain.py pair a.jpg b.jpg --model runs/xcos/checkpoints/last.ckpt --methods xcos,corrrise --out pair.png

- Images: any format PIL reads, any size; grayscale and palette images become RGB (3 equal channels
  for grayscale). Each image is centre-cropped to the largest centred square (``--crop PX``: a PX x PX
  square around the centre instead), then resized to ``--size`` (112, the models' template), bilinear.
  Faces should be roughly aligned (eyes level, face filling the crop) as in the training data.
- ``--model``: a ``.ckpt`` of this framework or ``<format>:<path>`` (see ``explain.py verify``).
- Score: cosine of the two embeddings (what the post-hoc methods explain); xCos checkpoints also print
  their xCos score. Decision: ``same person`` when the cosine is above ``--threshold``; without it no
  decision is made (``explain.py verify`` reports a model's EER threshold on a pair set).
- ``--methods``: any of ``explain.py``'s explainers (corrrise, rise, srise, occlusion, xssab, gradcam,
  gradcampp, random; xcos for xCos checkpoints). Grad-CAM explains the model's last 7x7 block, found
  automatically (``default_target_layer``). ``--n-masks`` sets N of the mask methods.
- ``--out``: the figure (PNG or any format PIL writes, by extension): per method a row with face A,
  face B and the similarity / dissimilarity maps of each face over it; xCos checkpoints add the 7x7
  grids S and W. ``--json`` prints ``{"score", "threshold", "decision", "methods": {name: {"seconds"}},
  ...}`` as the last line of stdout.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xcos_lightning.datamodules.image_io import open_image, prepare, to_tensor
from xcos_lightning.errors import DataFormatError, ModelSpecError
from xcos_lightning.explain.base import Explainer, PairExplanation
from xcos_lightning.explain.figure import pair_figure
from xcos_lightning.explain.registry import create_explainer, list_explainers
from xcos_lightning.models.spec import load_model

MASK_METHODS = ("corrrise", "rise", "srise")  # take --n-masks


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
    """Image file -> ``(3, size, size)`` float RGB in ``[0, 1]``: centre square (``crop`` px, default the
    largest), resized to ``size``."""
    if not path.is_file():
        raise DataFormatError(f"image {path} does not exist")
    img = open_image(path, str(path))
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
        return create_explainer(name, model=model, threshold=args.threshold)
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
    same = None if args.threshold is None else score > args.threshold
    decision = "undecided (no --threshold)" if same is None else ("same person" if same else "different persons")

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
    title = (f"{args.img_a.name} vs {args.img_b.name} | cosine {score:.4f}"
             + ("" if xcos is None else f" | xCos {xcos:.4f}")
             + f" | threshold {threshold_text} | {decision}\nmodel {args.model}")
    figure = pair_figure(img_a[0], img_b[0], explanations, title=title, threshold=args.threshold,
                         xcos_grids=None if grids is None else (grids[0][0], grids[1][0]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        figure.save(args.out)
    except (ValueError, OSError) as exc:  # unknown extension, unwritable path
        raise DataFormatError(f"cannot write the figure to {args.out} ({exc}); use a .png path") from exc

    print(f"score (cosine): {score:.4f}" + ("" if xcos is None else f"; xCos score: {xcos:.4f}"))
    print(f"threshold: {threshold_text}")
    print(f"decision: {decision}")
    for name, t in timings.items():
        print(f"{name}: {t['seconds']:.2f} s")
    print(f"figure: {args.out}")
    if args.json:
        print(json.dumps({"score": score, "xcos_score": xcos, "threshold": args.threshold, "same": same,
                          "decision": decision, "methods": timings, "model": args.model, "figure": str(args.out),
                          "size": args.size, "crop": args.crop}))
    return 0
