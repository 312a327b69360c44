"""Detect and align every LFW image: misses, several-face photos, small faces, images/s cold and warm.

    python benchmarks/align_lfw.py --lfw ../shared/data/lfw --cache-dir /tmp/xcos_cache [--detector mtcnn]
        [--limit N] [--threads 1] [--workers 1] [--misses-figure docs/lfw_misses.png]

Cold: the landmark cache starts empty (its file is deleted first), so every photo is decoded (``--workers``
DataLoader workers) and detected in batches. Warm: the same set again, read from the cache. Also prints the
mean and max distance of the aligned landmarks from the template (the least-squares residual: faces are not
all the template's shape) and writes the photos without a face as a figure.
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from xcos_lightning.align import FaceAligner, LandmarkCache, apply, template
from xcos_lightning.align.cache import CACHE_FILE
from xcos_lightning.datamodules.aligned import SourceAlignment
from xcos_lightning.datamodules.image_folder import IdentityFolderDataset


def misses_figure(paths: list[Path], out: Path, side: int = 125, columns: int = 8) -> None:
    columns = min(columns, len(paths))
    rows = max(1, -(-len(paths) // columns))
    canvas = Image.new("RGB", (columns * side, rows * (side + 14)), "white")
    draw = ImageDraw.Draw(canvas)
    for k, path in enumerate(paths):
        x, y = (k % columns) * side, (k // columns) * (side + 14)
        with Image.open(path) as img:
            canvas.paste(img.convert("RGB").resize((side, side)), (x, y))
        draw.text((x + 2, y + side), path.stem[:20], fill="black")
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path, default=Path("../shared/data/lfw"))
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--detector", default="mtcnn")
    parser.add_argument("--min-face-size", type=int, default=20)
    parser.add_argument("--limit", type=int, default=None, help="first N images only")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--misses-figure", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    paths = IdentityFolderDataset(args.lfw).paths[:args.limit]
    (args.cache_dir / CACHE_FILE).unlink(missing_ok=True)
    options = {"min_face_size": args.min_face_size} if args.detector == "mtcnn" else {}
    results = {"images": len(paths), "detector": args.detector, "threads": args.threads, "workers": args.workers}
    for run in ("cold", "warm"):
        aligner = FaceAligner(args.detector, on_miss="crop", cache=LandmarkCache(args.cache_dir),
                              batch_size=args.batch_size, **options)
        start = time.perf_counter()
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            alignment = SourceAlignment(aligner, paths, "lfw", num_workers=args.workers)
        seconds = time.perf_counter() - start
        results[f"{run}_seconds"] = round(seconds, 2)
        results[f"{run}_images_per_s"] = round(len(paths) / seconds, 2)
        print(f"{run}: {len(paths)} images in {seconds:.1f} s ({len(paths) / seconds:.1f} images/s)", flush=True)
    results.update(misses=alignment.misses, several_faces=alignment.multi, small_faces=alignment.small,
                   key=aligner.key)
    residuals = [np.linalg.norm(apply(aligner.matrix(f), f.points) - template(aligner.size), axis=1)
                 for f in alignment.faces if f is not None]
    results["template_residual_px_mean"] = round(float(np.mean(residuals)), 3)
    results["template_residual_px_max"] = round(float(np.max(residuals)), 3)
    missed = [p for p, f in zip(paths, alignment.faces) if f is None]
    results["missed"] = [str(p.relative_to(args.lfw)) for p in missed]
    if args.misses_figure is not None and missed:
        misses_figure(missed, args.misses_figure)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
