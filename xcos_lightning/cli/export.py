"""``explain.py export``: write a model as safetensors, TorchScript or ONNX, with a parity report.

    explain.py export mobilefacenet:../shared/weights/mobilefacenet_128d.pt --format onnx --out mfn.onnx
    explain.py export runs/kz25_xcos/checkpoints/last.ckpt --format safetensors --out kz25.safetensors --json
    explain.py export mypkg.models:build --format torchscript --out model.pt

- ``SPEC``: any model SPEC (``.ckpt``, ``<format>:<path>``, ``module:function``); safetensors needs a model of
  this package (xCos checkpoints, the pretrained layouts), TorchScript and ONNX take any traceable model.
- ``--format``: ``safetensors`` (weights + architecture metadata; loads back as ``safetensors:<path>``, no
  pickle), ``torchscript`` (``torch.jit.load``; xCos models keep ``xcos_maps``), ``onnx`` (dynamic batch;
  xCos models as one pair graph ``img_a, img_b -> emb_a, emb_b, S, W, xcos``; needs the ``onnx`` extra).
  Details: ``xcos_lightning.io.export``.
- Parity: the exported file (reloaded; ONNX through onnxruntime) and the source model embed the same 3
  deterministic pairs of smooth random 112 x 112 images (a batch size other than the export example's);
  the report gives the max abs difference of the embeddings and, for xCos models, of the xCos score, S and
  W. Exit code 1 when one exceeds ``--tolerance`` (default 1e-4); the file is kept for inspection.
- Output: a readable report; ``--json`` adds one JSON object as the last line of stdout.
- Exit codes (explain.py's rule): 0 parity within tolerance, 1 parity failed, 2 bad input.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from xcos_lightning.errors import ModelSpecError
from xcos_lightning.io.export import FORMATS, PARITY_BATCH, export_model
from xcos_lightning.io.spec import MODEL_SPEC_HELP, load_model


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``export`` on an ``argparse`` subparsers object."""
    parser = subparsers.add_parser("export", help="export a model (safetensors, TorchScript, ONNX) with parity",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", metavar="SPEC", help=MODEL_SPEC_HELP)
    # No argparse choices: an unknown format is reported as the one-line error of every bad input.
    parser.add_argument("--format", required=True, help=f"one of {', '.join(FORMATS)}")
    parser.add_argument("--out", required=True, type=Path, help="exported file")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest accepted max abs difference (default 1e-4)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON line at the end")
    return parser


def log(message: str) -> None:
    print(f"[export] {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Export ``args.spec``; 0 when every parity difference is within ``--tolerance``, 1 otherwise."""
    if args.format not in FORMATS:
        raise ModelSpecError(f"--format {args.format!r}: choose one of {', '.join(FORMATS)}")
    model = load_model(args.spec)
    params = sum(p.numel() for p in model.parameters())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    log(f"exporting {args.spec} ({params:,} parameters) as {args.format} to {args.out}")
    start = time.perf_counter()
    parity = export_model(model, args.format, args.out)
    seconds = time.perf_counter() - start
    ok = all(d <= args.tolerance for d in parity.values())
    report = {"model": args.spec, "format": args.format, "out": str(args.out), "bytes": args.out.stat().st_size,
              "parameters": params, "xcos": bool(getattr(model, "has_xcos", False)), "parity_max_abs_diff": parity,
              "parity_pairs": PARITY_BATCH, "tolerance": args.tolerance, "ok": ok, "seconds": seconds}
    print(f"exported {args.spec} -> {args.out} ({args.format}, {report['bytes'] / 1e6:.2f} MB, {seconds:.1f} s)")
    print(f"parity on {PARITY_BATCH} deterministic pairs (max abs difference vs the source model):")
    for name, diff in parity.items():
        print(f"  {name}: {diff:.3g}")
    print("parity: ok" if ok else f"parity: FAILED (above --tolerance {args.tolerance:g})")
    if args.json:
        print(json.dumps(report))
    return 0 if ok else 1
