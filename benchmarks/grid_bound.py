"""How well can any same-cell comparison of a 7x7 feature map verify LFW faces, unaligned or aligned?

xCos compares two faces cell by cell (cell cosines S, weighted by an attention W); a global embedding
compares pooled features, where every cell of one face meets every cell of the other. On faces that are
not landmark-aligned the two differ. This script measures both on the *teacher itself* (the shared
pretrained MobileFaceNet, whose 512x7x7 ``conv2`` map is where xCos backbones tap their grid), so the
result bounds what an xCos head trained on top of that map can reach without learning new,
misalignment-robust cell features:

- the teacher's cosine (its global depthwise 7x7 pooling, ``gdconv``, then ``conv3`` + BN);
- the flattened map's cosine, raw and weighted by the ``gdconv`` kernel k;
- cell cosines of the map averaged with uniform W and with W = sum_c k_c,ij^2 (the teacher's own
  spatial emphasis), of the raw map and of k * map;
- the same on k * map after averaging each cell with its neighbours (3x3 and 5x5 windows): what cells
  with larger receptive fields, i.e. a grid head with a spatial kernel instead of 1x1, could reach;
- the teacher's per-cell 128-d contributions z_ij = conv3(k_ij * map_ij) (its embedding is sum_ij z_ij
  plus a constant): flattened, and cell cosines with W = sum_c k^2 and W = |z_a,ij| |z_b,ij|;
- optionally, for xCos checkpoints of this framework (``--checkpoints``): their flattened-grid cosine,
  xCos with the learnt W, uniform W and W = sum_c k^2.

Data: the first ``--pairs`` pairs of LFW ``pairs.txt`` (default 6,000 = the 10 official folds), centre
crop 120 px around (125, 125) -> 112 (the ``lfw:`` SPEC default), or with ``--align mtcnn`` each face warped
onto the ArcFace template by its five MTCNN landmarks (cached in ``--cache-dir``; LFW's one photo without a face
centre-cropped), no flip. Accuracy: k-fold over the
official folds of 600 pairs (300 genuine + 300 impostor, file order; k = ``--pairs`` / 600, so use a
multiple of 600), mean +- std over folds, as ``explain.py verify``.

    .venv/bin/python benchmarks/grid_bound.py [--pairs 6000] [--align mtcnn] [--checkpoints runs/kz25_xcos/checkpoints/last.ckpt]
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from xcos_lightning.align import FaceAligner, LandmarkCache
from xcos_lightning.datamodules.pairs_file import load_pair_set
from xcos_lightning.io.spec import load_model
from xcos_lightning.metrics.verification import kfold_accuracy

REPO = Path(__file__).resolve().parents[1]


def batched(fn, x: Tensor, size: int = 100) -> Tensor:
    with torch.inference_mode():
        return torch.cat([fn(x[i:i + size]) for i in range(0, len(x), size)])


def cell_cos(a: Tensor, b: Tensor) -> Tensor:
    """``(N, C, 7, 7)`` x2 -> cell cosines ``(N, 7, 7)``."""
    return F.cosine_similarity(a, b, dim=1)


def flat_cos(a: Tensor, b: Tensor) -> Tensor:
    return F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)


def smooth(grid: Tensor, window: int) -> Tensor:
    """Each cell of ``(N, C, 7, 7)`` replaced by the mean of the ``window x window`` cells around it."""
    return F.avg_pool2d(grid, window, stride=1, padding=window // 2, count_include_pad=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("XCOS_SHARED", REPO.parent / "shared")))
    parser.add_argument("--pairs", type=int, default=6000, help="first pairs of pairs.txt, a multiple of 600")
    parser.add_argument("--checkpoints", nargs="*", default=[])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--align", default="none", help="mtcnn | dlib | none (default: the centre crop)")
    parser.add_argument("--cache-dir", default=None, help="landmark cache (default $XCOS_CACHE_DIR or ~/.cache)")
    args = parser.parse_args()
    if args.pairs < 1200 or args.pairs % 600:
        parser.error("--pairs must be a multiple of 600 (whole official folds), at least 1200")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    aligner = None if args.align == "none" else FaceAligner(args.align, on_miss="crop", cache=LandmarkCache(args.cache_dir))
    pair_set = load_pair_set(f"lfw:{args.shared / 'data/lfw'}", aligner=aligner)
    items = [pair_set[i] for i in range(args.pairs)]
    img_a, img_b = torch.stack([it["img_a"] for it in items]), torch.stack([it["img_b"] for it in items])
    labels = torch.tensor([bool(it["label"]) for it in items])
    rows: list[tuple[str, Tensor]] = []

    teacher = load_model(f"mobilefacenet:{args.shared / 'weights/mobilefacenet_128d.pt'}")
    rows.append(("teacher cosine (global pooling: gdconv, conv3, BN)",
                 F.cosine_similarity(batched(teacher, img_a), batched(teacher, img_b))))
    map_a, map_b = batched(teacher.grid_tap, img_a), batched(teacher.grid_tap, img_b)
    k = teacher.gdconv.depthwise.weight[:, 0].detach()  # (512, 7, 7)
    w_k = (k ** 2).sum(0) / (k ** 2).sum()
    proj = teacher.conv3.weight[:, :, 0, 0].detach()  # (128, 512)
    z_a, z_b = (torch.einsum("oc,nchw->nohw", proj, m * k) for m in (map_a, map_b))
    w_z = z_a.norm(dim=1) * z_b.norm(dim=1)
    rows += [
        ("teacher map, flattened cosine", flat_cos(map_a, map_b)),
        ("teacher map * k, flattened cosine", flat_cos(map_a * k, map_b * k)),
        ("teacher map, cell cosines, uniform W", cell_cos(map_a, map_b).mean((1, 2))),
        ("teacher map, cell cosines, W = sum_c k^2", (cell_cos(map_a, map_b) * w_k).sum((1, 2))),
        ("teacher map * k, cell cosines, W = sum_c k^2", (cell_cos(map_a * k, map_b * k) * w_k).sum((1, 2))),
        *[(f"teacher map * k, {w}x{w}-averaged cells, cell cosines, W = sum_c k^2",
           (cell_cos(smooth(map_a * k, w), smooth(map_b * k, w)) * w_k).sum((1, 2))) for w in (3, 5)],
        ("teacher contributions z, flattened cosine", flat_cos(z_a, z_b)),
        ("teacher contributions z, cell cosines, W = sum_c k^2", (cell_cos(z_a, z_b) * w_k).sum((1, 2))),
        ("teacher contributions z, cell cosines, W = norm(z_a) norm(z_b)",
         (cell_cos(z_a, z_b) * w_z).sum((1, 2)) / w_z.sum((1, 2))),
    ]
    for path in args.checkpoints:
        model = load_model(path)
        grid_a, grid_b = batched(model.grid, img_a), batched(model.grid, img_b)
        with torch.inference_mode():
            s, _, xcos = model.maps_from_grids(grid_a, grid_b)
        name = Path(path).name
        rows += [(f"{name}: flattened grid cosine", flat_cos(grid_a, grid_b)),
                 (f"{name}: xCos, learnt W", xcos),
                 (f"{name}: cell cosines, uniform W", s.mean((1, 2))),
                 (f"{name}: cell cosines, W = sum_c k^2", (s * w_k).sum((1, 2)))]

    folds = args.pairs // 600
    faces = "centre crop 120 -> 112" if aligner is None else f"aligned by {aligner.key}"
    print(f"LFW, first {args.pairs} pairs, {faces}, no flip, {folds} folds; torch threads "
          f"{torch.get_num_threads()}; {time.perf_counter() - start:.0f} s\n")
    print(f"| comparison | accuracy ({folds} folds) |\n|---|---|")
    for name, scores in rows:
        acc = kfold_accuracy(scores.float(), labels, folds)
        print(f"| {name} | {100 * acc['acc']:.2f} +- {100 * acc['acc_std']:.2f} % |")


if __name__ == "__main__":
    main()
