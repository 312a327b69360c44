"""``explain.py verify``: face-verification accuracy of a model on one or more pair sets.

    explain.py verify --model mobilefacenet:../shared/weights/mobilefacenet_128d.pt --data lfw:../shared/data/lfw
    explain.py verify --model runs/kz25_xcos/checkpoints/last.ckpt --data lfw.bin --data cfp_fp.bin --json

- ``--model``: a ``.ckpt`` of this framework (xCos models also get the ``xcos`` score) or ``<format>:<path>``.
- ``--data``: ``set.bin`` | ``lfw:<folder>`` (default crop: 120 px around (125, 125) of the 250x250 images,
  resized to 112) | ``pairs:<root>:<pairs file>`` | ``list:[<root>:]<file>`` (one ``path_a path_b same`` per line);
  repeat for several sets. ``--crop`` overrides the crop.
- ``--align mtcnn``: detect every image's face (five landmarks) and warp it onto the ArcFace template, as the
  ``.bin`` sets and the papers are; landmarks are cached by file content, so a second run skips detection.
  Default ``none`` (the SPEC's crop), so numbers stay comparable with sets that are aligned already.
- Each distinct image is decoded (and aligned) once, in ``--num-workers`` DataLoader workers while the model
  runs, and kept as a uint8 face in a memory-mapped cache keyed by file content and preprocessing
  (``--cache-dir``, default ``$XCOS_CACHE_DIR`` or ``~/.cache/xcos_lightning``; ``--no-cache``): a second run on
  the same set reads the faces instead of decoding them, and a changed file is read again.
- Scores: embed each image and its mirror (``--no-flip`` to skip), sum, L2-normalise, cosine; xCos models
  score pairs themselves (``cos`` of the flip-summed grids, and ``xcos``), as in training validation.
- Metrics: 10-fold accuracy (contiguous folds in file order; threshold chosen on 9 folds) mean +- std,
  EER and its threshold, TAR at FAR 1e-3 / 1e-4 (read at FAR 0 when a set has fewer impostors than 1/FAR).
- Output: a table on stdout; ``--json`` adds one line ``{"<set>": {"cos": {...}, "xcos": {...}}, "model": SPEC}``
  at the end. Progress goes to stderr.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from xcos_lightning.cli.face_args import add_align_args, add_size_args, face_size, make_aligner, make_face_cache
from xcos_lightning.datamodules.pair_set import PairSet
from xcos_lightning.datamodules.pairs_file import load_pair_set
from xcos_lightning.errors import VerificationSetError
from xcos_lightning.evaluate import default_batch_size, score_pair_set
from xcos_lightning.metrics.verification import verification_metrics
from xcos_lightning.models.device import prepare_for_device
from xcos_lightning.io.spec import MODEL_SPEC_HELP, load_model

FOLDS = 10


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``verify`` on an ``argparse`` subparsers object."""
    parser = subparsers.add_parser("verify", help="verification accuracy, EER and TAR@FAR on pair sets",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help=MODEL_SPEC_HELP)
    parser.add_argument("--data", required=True, action="append",
                        help="pair set SPEC: set.bin | lfw:<folder> | pairs:<root>:<file> | list:[<root>:]<file> "
                             "(lines 'path_a path_b same') (repeatable)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="pairs per forward pass (default: 4 on a CPU, 256 on a GPU)")
    parser.add_argument("--no-flip", action="store_true", help="skip the mirrored image (flip TTA)")
    parser.add_argument("--num-workers", type=int, default=1, help="image-decoding workers (default 1)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:i] (default auto)")
    parser.add_argument("--bf16", action="store_true", help="run the model under bfloat16 autocast")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON line at the end")
    add_size_args(parser)
    add_align_args(parser)
    return parser


def log(message: str) -> None:
    print(f"[verify] {message}", file=sys.stderr, flush=True)


def load_sets(args: argparse.Namespace, size: tuple[int, int], aligner=None) -> dict[str, PairSet]:
    """Every ``--data`` set, checked (and with ``aligner`` aligned) before any model runs (a broken set fails fast)."""
    sets = {}
    for spec in dict.fromkeys(args.data):
        pair_set = load_pair_set(spec, size=size, crop=args.crop, aligner=aligner, num_workers=args.num_workers)
        if len(pair_set) < FOLDS:
            raise VerificationSetError(f"{spec}: {len(pair_set)} pairs; {FOLDS}-fold accuracy needs at least {FOLDS}")
        sets[spec] = pair_set
    return sets


def format_table(results: dict[str, dict[str, dict[str, float]]], sizes: dict[str, tuple[int, int]]) -> str:
    """Readable table: one row per (set, score); percentages except thresholds."""
    header = ("set", "pairs", "score", "accuracy %", "thr", "EER %", "EER thr", "TAR@FAR1e-3 %", "TAR@FAR1e-4 %")
    rows = []
    for spec, kinds in results.items():
        n = sizes[spec][0]
        for kind, m in kinds.items():
            rows.append((spec, str(n), kind, f"{100 * m['acc']:.2f} +- {100 * m['acc_std']:.2f}",
                         f"{m['threshold']:.4f}", f"{100 * m['eer']:.2f}", f"{m['eer_threshold']:.4f}",
                         f"{100 * m['tar_far1e-3']:.2f}", f"{100 * m['tar_far1e-4']:.2f}"))
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i in (0, 2) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in (header, *rows)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for spec, (_, impostors) in sizes.items():
        at_zero = [f for f in ("1e-3", "1e-4") if impostors * float(f) < 1]  # FAR steps are 1/impostors
        if at_zero:
            lines.append(f"note: {spec} has {impostors} impostor pairs, so TAR@FAR{' and '.join(at_zero)} "
                         "is the TAR at FAR 0 (no impostor accepted)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Score every ``--data`` set with ``--model``; 0 on success (errors propagate as XCosError)."""
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    model = prepare_for_device(load_model(args.model), device).eval()
    size = face_size(args, model)
    batch_size = args.batch_size or default_batch_size(device)
    start = time.perf_counter()
    sets = load_sets(args, size, make_aligner(args, size, device))
    if args.align != "none":
        log(f"aligned with {args.align} in {time.perf_counter() - start:.1f} s")
    results, sizes = {}, {}
    for spec, pair_set in sets.items():
        start = time.perf_counter()
        scores = score_pair_set(model, pair_set, batch_size, flip=not args.no_flip, num_workers=args.num_workers,
                                bf16=args.bf16, desc=spec, cache=make_face_cache(args))
        labels = scores.pop("label")
        results[spec] = {kind: verification_metrics(s, labels, FOLDS) for kind, s in scores.items()}
        sizes[spec] = (len(labels), int((~labels).sum()))
        log(f"{spec}: {len(labels)} pairs scored in {time.perf_counter() - start:.1f} s on {device}")
    flip = "off" if args.no_flip else "on"
    faces = "centre crop" if args.align == "none" else f"aligned by {args.align}"
    print(f"model {args.model}; flip TTA {flip}; {size[0]}x{size[1]} px faces, {faces}\n")
    print(format_table(results, sizes))
    if args.json:
        print(json.dumps({**results, "model": args.model}))
    return 0
