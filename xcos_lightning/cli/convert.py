"""Convert face data between the formats users hold, without mxnet.

    python -m xcos_lightning.cli.convert rec <identity-folder root> <out.rec> [--size 112] [--crop N]
    python -m xcos_lightning.cli.convert bin <data SPEC> <out.bin> [--size 112] [--crop N] [--no-check]

``rec`` packs ``root/<identity>/<image>`` into ``out.rec`` + ``out.idx`` + ``property`` (MS1M layout:
header record 0, images at keys 1..N, labels = identities sorted by folder name). ``bin`` writes any pair
set (``lfw:<folder>``, ``pairs:<root>:<pairs file>``, another ``.bin``) as an insightface ``.bin``.
Aligned JPEG/PNG images that need no crop/resize are stored byte for byte; the others are re-encoded.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xcos_lightning.datamodules.image_folder import IdentityFolderDataset
from xcos_lightning.datamodules.image_io import encode_for_storage
from xcos_lightning.datamodules.pairs_file import load_pair_set
from xcos_lightning.datamodules.recordio import RecordIOWriter
from xcos_lightning.errors import XCosError


def folders_to_rec(root: Path, out: Path, size: int, crop: int | None, fmt: str) -> str:
    data = IdentityFolderDataset(root, size=size, crop=crop)
    with RecordIOWriter(out) as writer:
        writer.write_header_record(len(data))
        for i, path in enumerate(data.paths):
            image = encode_for_storage(path, size, crop, where=str(path), fmt=fmt)
            writer.write_image(i + 1, image, float(data.labels[i]))
        writer.write_property(data.num_classes, size, size)
    return f"wrote {out} (+ {writer.idx_path.name}, property): {len(data)} images, {data.num_classes} identities"


def pairs_to_bin(spec: str, out: Path, size: int, crop: int | None, check: bool, fmt: str) -> str:
    pairs = load_pair_set(spec, size=size, crop=crop, check=check)
    pairs.save_bin(out, fmt=fmt)
    return f"wrote {out}: {len(pairs)} pairs ({int(pairs.labels.sum())} genuine), {size}x{size} images"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xcos-convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    rec = commands.add_parser("rec", help="identity folders -> .rec/.idx/property")
    rec.add_argument("root", type=Path, help="folder holding one sub-folder of images per identity")
    rec.add_argument("out", type=Path, help="output .rec (the .idx and property are written beside it)")
    pairs = commands.add_parser("bin", help="pair set -> insightface verification .bin")
    pairs.add_argument("spec", help="lfw:<folder> | pairs:<root>:<pairs file> | <file>.bin")
    pairs.add_argument("out", type=Path, help="output .bin")
    pairs.add_argument("--no-check", action="store_true",
                       help="write even if the set cannot measure verification (all genuine, self-pairs, ...)")
    for sub in (rec, pairs):
        sub.add_argument("--size", type=int, default=112, help="output side in px (default 112)")
        sub.add_argument("--crop", type=int, default=None,
                         help="centre-crop side in px before resizing (default: none; lfw: 120 around (125,125))")
        sub.add_argument("--format", choices=("JPEG", "PNG"), default="JPEG",
                         help="encoding of images that must be re-encoded (default JPEG quality 95)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "rec":
            message = folders_to_rec(args.root, args.out, args.size, args.crop, args.format)
        else:
            message = pairs_to_bin(args.spec, args.out, args.size, args.crop, not args.no_check, args.format)
    except XCosError as exc:
        print(f"xcos-convert: error: {exc}", file=sys.stderr)
        return 1
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
