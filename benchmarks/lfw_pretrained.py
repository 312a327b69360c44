"""LFW verification accuracy of a pretrained model (default: the shared MobileFaceNet), CPU.

Protocol (insightface): each 250x250 deep-funneled LFW image is centre-cropped to 120x120 around
(125, 125) and resized to 112x112 (bilinear, antialiased), no landmark alignment; embed the image
and its horizontal flip, sum, L2-normalise; cosine similarity; official 10 folds of 600 pairs in
file order, best threshold on 9 folds, accuracy on the 10th; report mean +- std.

    .venv/bin/python benchmarks/lfw_pretrained.py [--spec mobilefacenet:PATH] [--shared ../shared]
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from xcos_lightning.io.pretrained import load_pretrained

REPO = Path(__file__).resolve().parents[1]
CROP_CENTRE, CROP_SIZE, FACE_SIZE = 125, 120, 112


def read_pairs(pairs_txt: Path) -> tuple[list[tuple[str, str]], np.ndarray]:
    """LFW ``pairs.txt`` -> (image path pairs relative to the LFW root, same-identity flags (N,))."""
    pairs, same = [], []
    for line in pairs_txt.read_text().splitlines()[1:]:
        f = line.split()
        if len(f) == 3:
            pairs.append((f"{f[0]}/{f[0]}_{int(f[1]):04d}.jpg", f"{f[0]}/{f[0]}_{int(f[2]):04d}.jpg"))
            same.append(True)
        elif len(f) == 4:
            pairs.append((f"{f[0]}/{f[0]}_{int(f[1]):04d}.jpg", f"{f[2]}/{f[2]}_{int(f[3]):04d}.jpg"))
            same.append(False)
    return pairs, np.array(same)


def load_face(path: Path) -> torch.Tensor:
    """Centre crop + resize: ``(3, 112, 112)`` float RGB in ``[0, 1]``."""
    img = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255
    lo = CROP_CENTRE - CROP_SIZE // 2
    crop = img[None, :, lo : lo + CROP_SIZE, lo : lo + CROP_SIZE]
    return F.interpolate(crop, size=(FACE_SIZE, FACE_SIZE), mode="bilinear", antialias=True, align_corners=False)[0]


@torch.no_grad()
def embed(model: torch.nn.Module, paths: list[Path], batch_size: int) -> np.ndarray:
    """Flip-augmented, L2-normalised embeddings ``(N, D)``."""
    out = []
    for i in range(0, len(paths), batch_size):
        x = torch.stack([load_face(p) for p in paths[i : i + batch_size]])
        e = model(x) + model(x.flip(-1))
        out.append(F.normalize(e, dim=1))
    return torch.cat(out).numpy()


def ten_fold_accuracy(scores: np.ndarray, same: np.ndarray, folds: int = 10) -> np.ndarray:
    """Per-fold accuracy with the threshold chosen on the other folds (contiguous folds, no shuffle)."""
    thresholds = np.arange(-1.0, 1.0, 0.001)
    fold_of = np.arange(len(scores)) * folds // len(scores)
    accs = []
    for k in range(folds):
        train, test = fold_of != k, fold_of == k
        train_acc = ((scores[train, None] > thresholds) == same[train, None]).mean(0)
        best = thresholds[np.argmax(train_acc)]
        accs.append(((scores[test] > best) == same[test]).mean())
    return np.array(accs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shared = Path(os.environ.get("XCOS_SHARED", REPO.parent / "shared"))
    parser.add_argument("--shared", type=Path, default=shared)
    parser.add_argument("--spec", help="pretrained SPEC '<format>:<path>' (default: the shared MobileFaceNet)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = args.spec or f"mobilefacenet:{args.shared / 'weights' / 'mobilefacenet_128d.pt'}"
    lfw = args.shared / "data" / "lfw"

    start = time.perf_counter()
    model = load_pretrained(spec)
    pairs, same = read_pairs(lfw / "pairs.txt")
    images = sorted({p for pair in pairs for p in pair})
    emb = embed(model, [lfw / p for p in images], args.batch_size)
    index = {p: i for i, p in enumerate(images)}
    scores = np.array([emb[index[a]] @ emb[index[b]] for a, b in pairs])
    accs = ten_fold_accuracy(scores, same)
    elapsed = time.perf_counter() - start

    print(f"model: {spec}")
    print(f"pairs: {len(pairs)} ({same.sum()} same), images embedded: {len(images)} (+ flips)")
    print(f"mean cosine: same {scores[same].mean():.3f}, different {scores[~same].mean():.3f}")
    print(f"10-fold accuracy: {100 * accs.mean():.2f} +- {100 * accs.std():.2f} %")
    print(f"time: {elapsed:.1f} s on {args.threads} CPU thread(s) ({2 * len(images) / elapsed:.0f} img/s incl. decoding)")


if __name__ == "__main__":
    main()
