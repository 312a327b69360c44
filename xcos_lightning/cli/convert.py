"""Convert face data between the formats users hold, without mxnet.

    python -m xcos_lightning.cli.convert rec <identity-folder root> <out.rec> [--size 112] [--crop N] [--align mtcnn]
    python -m xcos_lightning.cli.convert bin <data SPEC> <out.bin> [--size 112] [--crop N] [--no-check]
    python -m xcos_lightning.cli.convert align <identity folders | data SPEC> <out folder | out.rec | out.bin>
        [--align mtcnn] [--on-miss skip|crop|error] [--size 112] [--num-workers 2]

``rec`` packs ``root/<identity>/<image>`` into ``out.rec`` + ``out.idx`` + ``property`` (MS1M layout:
header record 0, images at keys 1..N, labels = identities sorted by folder name). ``bin`` writes any pair
set (``lfw:<folder>``, ``pairs:<root>:<pairs file>``, another ``.bin``) as an insightface ``.bin``.
Aligned JPEG/PNG images that need no crop/resize are stored byte for byte; the others are re-encoded. ``--crop``
and ``--size`` follow the rule of every command (``image_io.prepare``): without ``--crop`` a photo not of the
face's aspect is cut to its largest centred region of that aspect, never stretched. ``rec --align mtcnn`` is
``align`` into a ``.rec``.

``align`` detects every photo's face (five landmarks; MTCNN by default), warps it onto the ArcFace template and
writes aligned identity folders (same relative paths), a ``.rec`` (from identity folders) or a ``.bin`` (from
a pair set: ``lfw:<folder>``, ``pairs:<root>:<file>``). The landmarks go to a sidecar, ``landmarks.jsonl`` in
the output folder or ``<out>.landmarks.jsonl`` beside a file (one line per photo: path, content key, every
face's box, points and score, the face chosen), and a second run over the same photos reads them instead of
detecting. Photos without a face are listed in ``misses.txt`` / ``<out>.misses.txt`` and left out
(``--on-miss skip``, the default for identity folders: a training set loses a few photos), centre-cropped
(``crop``, the only choice for pairs, which cannot lose an image) or stop the run (``error``).
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from xcos_lightning.align import Face
from xcos_lightning.cli.face_args import add_align_args, add_size_args, make_aligner
from xcos_lightning.datamodules.aligned import SourceAlignment
from xcos_lightning.datamodules.image_folder import IdentityFolderDataset
from xcos_lightning.datamodules.image_io import encode_for_storage, encode_image
from xcos_lightning.datamodules.pairs_file import load_pair_set
from xcos_lightning.datamodules.recordio import RecordIOWriter
from xcos_lightning.errors import DataFormatError, XCosError


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


def sidecar_paths(out: Path) -> tuple[Path, Path]:
    """``(landmarks.jsonl, misses.txt)`` of an output folder or file."""
    if out.suffix in (".rec", ".bin"):
        return out.with_name(f"{out.name}.landmarks.jsonl"), out.with_name(f"{out.name}.misses.txt")
    return out / "landmarks.jsonl", out / "misses.txt"


def _seed_cache(aligner, sidecar: Path) -> int:
    """Landmarks of an earlier run (same detector settings) into the aligner's cache: no second detection."""
    if aligner.cache is None or not sidecar.is_file():
        return 0
    rows = [json.loads(line) for line in sidecar.read_text(encoding="utf-8").splitlines() if line.strip()]
    found = {r["key"]: [Face.from_json(f) for f in r["faces"]] for r in rows if r.get("detector") == aligner.key}
    aligner.cache.put_many(found, aligner.key)
    return len(found)


def _write_sidecars(out: Path, alignment: SourceAlignment, names: list[str], key: str) -> list[str]:
    landmarks, misses = sidecar_paths(out)
    landmarks.parent.mkdir(parents=True, exist_ok=True)
    with open(landmarks, "w", encoding="utf-8") as f:
        for name, k, found, chosen in zip(names, alignment.keys, alignment.found, alignment.faces):
            index = next((i for i, face in enumerate(found) if face is chosen), None)
            f.write(json.dumps({"path": name, "key": k, "detector": key, "faces": [x.to_json() for x in found],
                                "chosen": index}) + "\n")
    missed = [name for name, chosen in zip(names, alignment.faces) if chosen is None]
    misses.write_text("".join(f"{m}\n" for m in missed), encoding="utf-8")
    return missed


def align(src: str, out: Path, args: argparse.Namespace) -> str:
    """``convert align``: see the module docstring; returns the report line."""
    on_miss = args.on_miss
    args.on_miss = "error" if on_miss == "error" else "crop"  # skip = crop-fallback rows left out below
    aligner = make_aligner(args, (args.size, args.size))
    if aligner is None:
        raise DataFormatError("convert align needs a detector: --align mtcnn (or dlib, package.module:function)")
    seeded = _seed_cache(aligner, sidecar_paths(out)[0])
    folder = Path(src)
    if folder.is_dir():
        data = IdentityFolderDataset(folder, size=args.size, crop=args.crop)  # the crop: misses' fallback
        names = [str(p.relative_to(folder)) for p in data.paths]
        sources = data.paths
    else:
        if out.suffix != ".bin":
            raise DataFormatError(f"convert align {src}: a pair set is written as a .bin, not {out}")
        if on_miss == "skip":
            on_miss = "crop"  # a pair cannot lose one of its images
        pairs = load_pair_set(src, size=args.size, crop=args.crop, check=not args.no_check)
        names = [str(s) if isinstance(s, Path) else f"image {j}" for j, s in enumerate(pairs.sources)]
        sources = pairs.sources
    with warnings.catch_warnings():  # misses and small faces are counted in the report line instead
        warnings.simplefilter("ignore", RuntimeWarning)
        alignment = SourceAlignment(aligner, sources, src, args.num_workers)
    missed = _write_sidecars(out, alignment, names, aligner.key)
    kept = [i for i, f in enumerate(alignment.faces) if f is not None or on_miss == "crop"]
    if folder.is_dir():
        data.alignment = alignment
        if out.suffix == ".rec":
            with RecordIOWriter(out) as writer:
                writer.write_header_record(len(kept))
                for n, i in enumerate(kept):
                    writer.write_image(n + 1, encode_image(data.load_image(i), args.format), float(data.labels[i]))
                writer.write_property(data.num_classes, args.size, args.size)
        else:
            for i in kept:
                target = out / names[i]
                target = target.with_suffix(".png" if args.format == "PNG" else ".jpg")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(encode_image(data.load_image(i), args.format))
    else:
        pairs.alignment = alignment
        pairs.save_bin(out, fmt=args.format)
    report = (f"wrote {out}: {len(kept)} of {len(names)} images aligned to {args.size}x{args.size} by {aligner.key}; "
              f"{len(missed)} without a face ({'centre-cropped' if on_miss == 'crop' else 'left out'}, listed in "
              f"{sidecar_paths(out)[1].name}), {alignment.multi} with several faces (the most central kept), "
              f"{alignment.small} upscaled more than 2x; landmarks in {sidecar_paths(out)[0].name}")
    return report + (f" ({seeded} read from it, not detected again)" if seeded else "")


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
    aligned = commands.add_parser("align", help="detect, align and write identity folders, .rec or .bin")
    aligned.add_argument("src", help="identity-folder root (LFW's folder too) or a pair set SPEC (lfw:, pairs:)")
    aligned.add_argument("out", type=Path, help="output folder, .rec (from identity folders) or .bin (pair sets)")
    aligned.add_argument("--num-workers", type=int, default=2, help="decoding workers (default 2)")
    aligned.add_argument("--no-check", action="store_true", help="pair sets: write even if unusable for verification")
    add_align_args(aligned, default="mtcnn", on_miss=("skip", "crop", "error"),
                   on_miss_help="photo without a face: skip (default; pair sets: crop), crop (centre crop) or error")
    rec.add_argument("--num-workers", type=int, default=2, help="--align: decoding workers (default 2)")
    add_align_args(rec, on_miss=("skip", "crop", "error"),
                   on_miss_help="--align: photo without a face: skip (default), crop (centre crop) or error")
    for sub in (rec, pairs, aligned):
        add_size_args(sub, size_default=112)
        sub.add_argument("--format", choices=("JPEG", "PNG"), default="JPEG",
                         help="encoding of images that must be re-encoded (default JPEG quality 95)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "rec" and args.align == "none":
            message = folders_to_rec(args.root, args.out, args.size, args.crop, args.format)
        elif args.command in ("rec", "align"):  # rec --align is align into a .rec
            message = align(str(args.root if args.command == "rec" else args.src), args.out, args)
        else:
            message = pairs_to_bin(args.spec, args.out, args.size, args.crop, not args.no_check, args.format)
    except XCosError as exc:
        print(f"xcos-convert: error: {exc}", file=sys.stderr)
        return 2
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
