"""``explain.py pair``: explain one face pair with several methods and draw them in one figure.

    explain.py pair a.jpg b.png --model mobilefacenet:../shared/weights/mobilefacenet_128d.pt \\
        --methods corrrise,xssab,gradcam --threshold 0.3 --out pair.png [--json] [--n-masks 500]
    explain.py pair a.jpg b.jpg --model runs/xcos/checkpoints/last.ckpt --methods xcos,corrrise \\
        --threshold 0.3 --xcos-threshold 0.25 --out pair.png

- Images: any format PIL reads (JPEG, PNG, BMP, TIFF, WebP, GIF, ...), any size. Grayscale (8 or 16 bit)
  becomes 3 equal RGB channels, palette images become RGB, an alpha channel is dropped, and the EXIF
  orientation of camera photos is applied.
- Faces (default ``--align mtcnn``: photos are what users bring): MTCNN finds every face and its five
  landmarks, the most central face (``--face K``: the K-th from the left, 0-based; ``--face KA,KB`` per photo)
  is warped onto the ArcFace template of ``--size`` px, and a second figure ``<out>_photos.png`` draws each
  method's maps back onto the original photos with every face's box, index and landmarks. A photo without a
  face is an error naming it, or with ``--on-miss crop`` centre-cropped (warned). ``--align none``: the largest
  centred region of the face's aspect (``--crop PX``: PX high around the centre), resized to ``--size``, the
  rule of every command; for faces already
  aligned, and for the 250 x 250 deep-funneled LFW images ``--crop 120`` is the ``lfw:`` protocol of ``verify``.
  A face upscaled more than 2x (a small face or a tiny image) is warned about.
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
  {"seconds"}}, "photos": [{"path", "faces": [{"box", "points", "score"}], "chosen", "aligned"}, ...], ...}`` as
  the last line of stdout (``faces``: every face found, ``box`` x1, y1, x2, y2 and ``points`` (x, y) in photo
  pixels, ``score`` the detector's confidence).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xcos_lightning.align import MAX_UPSCALE, Face, FaceAligner, warp_back
from xcos_lightning.align.transform import scale_of
from xcos_lightning.cli.face_args import add_align_args, add_size_args, face_size, make_aligner
from xcos_lightning.datamodules.image_io import crop_box, largest_crop, open_image, prepare, to_tensor
from xcos_lightning.errors import DataFormatError, ModelSpecError
from xcos_lightning.explain.base import PairExplanation
from xcos_lightning.explain.figure import pair_figure, photo_figure
from xcos_lightning.explain.registry import build_explainer, list_explainers
from xcos_lightning.models.device import prepare_for_device
from xcos_lightning.io.spec import MODEL_SPEC_HELP, load_model

MASK_METHODS = ("corrrise", "rise", "srise")  # take --n-masks


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``pair`` on an ``argparse`` subparsers object."""
    parser = subparsers.add_parser("pair", help="explain one face pair with several methods, as a figure",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("img_a", type=Path, help="first face image (any format PIL reads)")
    parser.add_argument("img_b", type=Path, help="second face image")
    parser.add_argument("--model", required=True, help=MODEL_SPEC_HELP)
    parser.add_argument("--methods", required=True, help="comma-separated explainers, e.g. corrrise,xssab,gradcam")
    parser.add_argument("--out", required=True, type=Path, help="figure file (.png)")
    parser.add_argument("--threshold", type=float, default=None, help="cosine decision threshold (default: none)")
    parser.add_argument("--xcos-threshold", type=float, default=None,
                        help="xCos-score decision threshold of xCos models, S's colour centre (default: --threshold)")
    parser.add_argument("--n-masks", type=int, default=None,
                        help=f"masks for {', '.join(MASK_METHODS)} (default: the method's own, 500)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:i] (default auto)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of torch (default: torch's; 1 is fastest on a busy machine)")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON line at the end")
    add_size_args(parser)
    add_align_args(parser, default="mtcnn")
    parser.add_argument("--face", default=None, metavar="K|KA,KB",
                        help="face to explain in photos with several: K-th from the left (0-based), one for both "
                             "photos or one per photo (default: the most central)")
    return parser


@dataclass
class Photo:
    """One input photo and the face cut from it: ``face`` ``(3, size, size)`` in [0, 1]; ``matrix`` ``(2, 3)``
    maps photo pixels to face pixels (the alignment, or the centre crop and resize), so maps go back."""

    path: Path
    pixels: np.ndarray
    face: Tensor
    matrix: np.ndarray
    faces: tuple[Face, ...] = ()
    chosen: int | None = None

    def to_json(self) -> dict:
        return {"path": str(self.path), "faces": [f.to_json() for f in self.faces], "chosen": self.chosen,
                "aligned": self.chosen is not None}


def _crop_matrix(shape: tuple[int, ...], size: tuple[int, int], crop: int) -> np.ndarray:
    """The centre crop of ``prepare`` (``crop`` px high, resized to ``size`` ``(H, W)``) as a ``(2, 3)`` matrix."""
    left, top, right, bottom = crop_box((shape[1], shape[0]), size, crop)
    kx, ky = size[1] / (right - left), size[0] / (bottom - top)
    return np.array([[kx, 0.0, -kx * left], [0.0, ky, -ky * top]])


def _warn_upscale(path: Path, scale: float) -> None:
    if scale > MAX_UPSCALE:
        warnings.warn(f"{path}: the face is upscaled {scale:.1f}x to the model input (a small face or image: the "
                      "model sees interpolated pixels)", RuntimeWarning, stacklevel=3)


def load_photo(path: Path, size: tuple[int, int], crop: int | None, aligner: FaceAligner | None = None,
               face: int | None = None) -> Photo:
    """Image file -> :class:`Photo`: upright (EXIF), its face aligned by ``aligner`` (face ``face`` or the most
    central), or the centre square (``crop`` px, default the largest) when there is no aligner or, with
    ``on_miss="crop"``, no face."""
    if not path.is_file():
        raise DataFormatError(f"image {path} does not exist")
    image = open_image(path, str(path))  # decodes, or raises a DataFormatError naming the file
    pixels = np.asarray(image)
    if aligner is not None:
        located = aligner.choose(aligner.find([pixels])[0], pixels.shape, str(path), face)
        faces = located.faces
        if located.chosen is not None:
            chosen = faces[located.chosen]
            matrix = aligner.matrix(chosen)
            _warn_upscale(path, scale_of(matrix))
            return Photo(path, pixels, to_tensor(aligner.warp(pixels, chosen)), matrix, faces, located.chosen)
        warnings.warn(f"{path}: no face found; centre-cropped instead (--on-miss crop)", RuntimeWarning, stacklevel=2)
    side = crop or largest_crop(image.size, size)  # prepare's rule, kept here for the matrix back to the photo
    _warn_upscale(path, size[0] / side)
    face_img = to_tensor(prepare(image, size, side, where=str(path)))
    return Photo(path, pixels, face_img, _crop_matrix(pixels.shape, size, side), located.faces if aligner else ())


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


def parse_faces(text: str | None) -> tuple[int | None, int | None]:
    if text is None:
        return None, None
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values) < 0:
        raise DataFormatError(f"--face {text!r}: expected K or KA,KB (face indices, 0-based, from the left)")
    return (values[0], values[-1])


def explainer_options(name: str, args: argparse.Namespace) -> dict:
    """``--threshold`` (``--xcos-threshold`` for the xCos map) and ``--n-masks`` for the registry's builder."""
    threshold = args.threshold if name != "xcos" or args.xcos_threshold is None else args.xcos_threshold
    return {"threshold": threshold, **({"n_masks": args.n_masks} if args.n_masks is not None else {})}


def log(message: str) -> None:
    print(f"[pair] {message}", file=sys.stderr, flush=True)


def photos_path(out: Path) -> Path:
    """Where the maps-on-photos figure goes: ``fig.png`` -> ``fig_photos.png``."""
    return out.with_name(f"{out.stem}_photos{out.suffix}")


def run(args: argparse.Namespace) -> int:
    """Explain ``img_a`` vs ``img_b`` with every method, save the figure(s); 0 on success."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    face_a, face_b = parse_faces(args.face)
    for path in (args.img_a, args.img_b):
        if not path.is_file():
            raise DataFormatError(f"image {path} does not exist")
    model = prepare_for_device(load_model(args.model), device).eval()
    methods = parse_methods(args.methods, model)
    size = face_size(args, model)
    aligner = make_aligner(args, size, device)
    photos = [load_photo(p, size, args.crop, aligner, k) for p, k in ((args.img_a, face_a), (args.img_b, face_b))]
    img_a, img_b = (p.face[None].to(device) for p in photos)
    # every explainer is built before any runs: a method that cannot work here (Grad-CAM without a suitable
    # layer, ...) fails at once instead of after minutes of the others
    explainers = [build_explainer(name, model, **explainer_options(name, args)) for name in methods]
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
    for name, built in zip(methods, explainers):
        start = time.perf_counter()
        with built as explainer:
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
    figures = {args.out: pair_figure(img_a[0], img_b[0], explanations, title="\n".join(lines),
                                     threshold=xcos_threshold,
                                     xcos_grids=None if grids is None else (grids[0][0], grids[1][0]))}
    if aligner is not None:
        figures[photos_path(args.out)] = photo_figure(
            (photos[0].pixels, photos[1].pixels), (photos[0].faces, photos[1].faces),
            (photos[0].chosen, photos[1].chosen), explanations,
            lambda k, face_map: warp_back(face_map, photos[k].matrix, photos[k].pixels.shape[:2]),
            title="\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for path, figure in figures.items():
        try:
            figure.save(path)
        except (ValueError, OSError) as exc:  # unknown extension, unwritable path
            raise DataFormatError(f"cannot write the figure to {path} ({exc}); use a .png path") from exc

    print(f"score (cosine): {score:.4f}" + ("" if xcos is None else f"; xCos score: {xcos:.4f}"))
    print(f"threshold: {threshold_text}" + ("" if xcos is None else f"; xCos threshold: {xcos_text}"))
    print(f"decision: {decision}" + ("" if xcos is None else f"; xCos decision: {_decision(same_xcos)}"))
    for photo in photos if aligner is not None else ():
        where = "no face: centre crop" if photo.chosen is None else f"face {photo.chosen} of {len(photo.faces)}"
        print(f"{photo.path.name}: {where}")
    for name, t in timings.items():
        print(f"{name}: {t['seconds']:.2f} s")
    for path in figures:
        print(f"figure: {path}")
    if args.json:
        print(json.dumps({"score": score, "xcos_score": xcos, "threshold": args.threshold,
                          "xcos_threshold": xcos_threshold if xcos is not None else None, "same": same,
                          "same_xcos": same_xcos, "decision": decision, "methods": timings, "model": args.model,
                          "figure": str(args.out), "figures": [str(p) for p in figures], "size": list(size),
                          "crop": args.crop, "align": args.align, "photos": [p.to_json() for p in photos]}))
    return 0


def _decision(same: bool | None) -> str:
    return "undecided (no threshold)" if same is None else ("same person" if same else "different persons")
