"""Write a contact sheet of synthetic faces (rows: identities, columns: images) to a PNG for eyeballing.

Usage: python scripts/preview_synthetic.py [--out /tmp/synthetic_faces.png] [--rows 8] [--cols 8]
       [--occluder-prob 0.3] [--jitter 1.0] [--seed 0] [--landmarks]
``--landmarks`` marks the ArcFace template points in red, to check the alignment of the faces.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image

from xcos_lightning.datamodules.synthetic_faces import TEMPLATE, SyntheticFaces


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/synthetic_faces.png")
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--cols", type=int, default=8)
    ap.add_argument("--occluder-prob", type=float, default=0.0)
    ap.add_argument("--jitter", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--landmarks", action="store_true")
    args = ap.parse_args()
    data = SyntheticFaces(args.rows, seed=args.seed, occluder_prob=args.occluder_prob, jitter=args.jitter)
    ids = torch.arange(args.rows).repeat_interleave(args.cols)
    imgs, _ = data.render_batch(ids, torch.arange(args.cols).repeat(args.rows))
    if args.landmarks:
        for x, y in TEMPLATE:
            imgs[:, :, int(y * data.size / 112), int(x * data.size / 112)] = torch.tensor([1.0, 0.0, 0.0])
    s = data.size
    sheet = imgs.view(args.rows, args.cols, 3, s, s).permute(0, 3, 1, 4, 2).reshape(args.rows * s, args.cols * s, 3)
    Image.fromarray((sheet.numpy() * 255).round().astype(np.uint8)).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
