"""The face options shared by every command that reads photos (``verify``, ``pair``, ``benchmark``, ``compare``,
``convert rec|bin|align``): ``--size`` and ``--crop`` (one rule: ``image_io.prepare``, a photo not of the face's
aspect is cut to its largest centred region of that aspect, never stretched), the alignment options and the
:class:`~xcos_lightning.align.FaceAligner` they describe, and the caches (landmarks, decoded faces) they share."""
from __future__ import annotations

import argparse

from torch import nn

from xcos_lightning.align import ON_MISS, FaceAligner, LandmarkCache, list_detectors
from xcos_lightning.datamodules.face_cache import FaceCache
from xcos_lightning.io.spec import input_size


def add_size_args(parser: argparse.ArgumentParser, size_default: int | None = None) -> None:
    """``--size`` (``size_default`` px, ``None``: the model's input size) and ``--crop``."""
    group = parser.add_argument_group("face size and crop")
    group.add_argument("--size", type=int, default=size_default,
                       help=f"face side in px (default {size_default})" if size_default else
                       "face side in px fed to the model (default: the model's input_size, 112x112 unless it "
                       "declares another such as 112x96)")
    group.add_argument("--crop", type=int, default=None,
                       help="height in px of the centred region cut before resizing, its width of the face's aspect "
                            "(default: the largest such region, the whole image when square; lfw: 120 around "
                            "(125, 125)); with --align, the fallback of photos without a face")


def face_size(args: argparse.Namespace, model: nn.Module | None = None) -> tuple[int, int]:
    """``(H, W)`` of the faces: ``--size`` squared when given, else ``model``'s input size (112 x 112 without one)."""
    return (args.size, args.size) if args.size else input_size(model)


def add_align_args(parser: argparse.ArgumentParser, default: str = "none", on_miss: tuple[str, ...] = ON_MISS,
                   on_miss_help: str = "photo without a face: error (default) or crop (the centre crop, counted "
                                       "and warned)") -> None:
    """``--align``, ``--on-miss`` (``on_miss``: its choices, the first the default), ``--min-face-size``,
    ``--cache-dir``, ``--no-cache``."""
    group = parser.add_argument_group("face alignment")
    group.add_argument("--align", default=default, metavar="DETECTOR",
                       help=f"detect five landmarks and warp each face onto the ArcFace template: "
                            f"{' | '.join(list_detectors())} | package.module:function | none (default {default})")
    group.add_argument("--on-miss", choices=on_miss, default=on_miss[0], help=on_miss_help)
    group.add_argument("--min-face-size", type=int, default=20,
                       help="mtcnn: smallest face searched for, px (default 20; landmarks move ~1 px with it)")
    group.add_argument("--cache-dir", default=None,
                       help="folder of the landmark and decoded-face caches (default $XCOS_CACHE_DIR or "
                            "~/.cache/xcos_lightning; data folders may be read-only)")
    group.add_argument("--no-cache", action="store_true",
                       help="detect and decode again instead of reusing cached landmarks and faces")


def make_aligner(args: argparse.Namespace, size: tuple[int, int], device: str = "cpu") -> FaceAligner | None:
    """The aligner the options describe, or ``None`` for ``--align none``."""
    if args.align == "none":
        return None
    options = {"min_face_size": args.min_face_size, "device": device} if args.align == "mtcnn" else {}
    cache = False if args.no_cache else LandmarkCache(args.cache_dir)
    return FaceAligner(args.align, size=size, on_miss=args.on_miss, cache=cache, **options)


def make_face_cache(args: argparse.Namespace) -> FaceCache | None:
    """The decoded-face cache of ``--cache-dir`` (``None`` with ``--no-cache``)."""
    return None if args.no_cache else FaceCache(args.cache_dir)
