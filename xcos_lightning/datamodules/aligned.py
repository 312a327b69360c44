"""Alignment of a list of image sources (files or encoded bytes): one detection pass, then cheap warps.

Datasets that accept ``aligner`` (:class:`~xcos_lightning.datamodules.pair_set.PairSet`,
:class:`~xcos_lightning.datamodules.image_folder.IdentityFolderDataset`) build a :class:`SourceAlignment` when
opened: every distinct photo is detected once (decoded in DataLoader workers, landmarks cached on disk by
content), the face to use is chosen, and loading an item is decode + one affine warp.
"""
from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from xcos_lightning.align import MAX_UPSCALE, Face, FaceAligner, content_key
from xcos_lightning.datamodules.image_io import open_image
from xcos_lightning.errors import DataFormatError

Source = bytes | Path


class _Decoder:
    """``decoder(i)`` -> uint8 RGB ``(H, W, 3)`` of ``sources[i]``; picklable, so DataLoader workers decode."""

    def __init__(self, sources: Sequence[Source], name: str) -> None:
        self.sources, self.name = list(sources), name

    def __call__(self, i: int) -> np.ndarray:
        source = self.sources[i]
        return np.asarray(open_image(source, f"{self.name}: {source if isinstance(source, Path) else f'image {i}'}"))


def read_source(source: Source) -> bytes:
    """The encoded bytes of a source (a file's content, or the bytes themselves)."""
    if isinstance(source, bytes):
        return source
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise DataFormatError(f"{source}: cannot read the image file ({exc.strerror or exc})") from exc


class SourceAlignment:
    """The chosen :class:`Face` of each of ``sources`` (``faces``; ``None``: no face, the caller's centre crop is
    used), every face found (``found``) and the content keys of the sources (``keys``).

    Raises :class:`~xcos_lightning.align.NoFaceError` naming the first photo without a face when the aligner's
    ``on_miss`` is ``"error"``. Counts ``misses`` (centre-cropped), ``multi`` (photos with several faces) and
    ``small`` (faces upscaled more than ``MAX_UPSCALE``), each warned once for the whole set (misses as left out
    when the caller ``drops_misses``, else as centre-cropped).
    """

    def __init__(self, aligner: FaceAligner, sources: Sequence[Source], name: str, num_workers: int = 0,
                 progress: bool = True, drops_misses: bool = False) -> None:
        self.aligner, self.size = aligner, aligner.size
        sources = list(sources)
        self.keys = keys = [content_key(read_source(s)) for s in sources]
        self.found = found = aligner.detect(keys, _Decoder(sources, name), num_workers=num_workers, progress=progress,
                               desc=f"{name}: detecting faces")
        self.faces: list[Face | None] = []
        misses, multi, small = [], 0, 0
        for source, faces in zip(sources, found):
            where = f"{name}: {source if isinstance(source, Path) else 'image'}"
            with Image.open(source if isinstance(source, Path) else io.BytesIO(source)) as img:
                shape = (img.height, img.width)
            located = aligner.choose(faces, shape, where)
            face = None if located.chosen is None else located.faces[located.chosen]
            misses += [where] if face is None else []
            multi += len(faces) > 1
            small += face is not None and aligner.upscale(face) > MAX_UPSCALE
            self.faces.append(face)
        self.misses, self.multi, self.small = len(misses), multi, small
        if misses:
            fallback = "left out" if drops_misses else "centre-cropped instead"
            warnings.warn(f"{name}: no face found in {len(misses)} of {len(sources)} images (detector "
                          f"{aligner.key}); {fallback}, e.g. {misses[:3]}", RuntimeWarning, stacklevel=2)
        if small:
            warnings.warn(f"{name}: {small} faces are upscaled more than {MAX_UPSCALE:g}x to fit the "
                          f"{self.size[0]}x{self.size[1]} template (small faces: the model sees interpolated pixels)",
                          RuntimeWarning, stacklevel=2)

    def subset(self, indices: Sequence[int]) -> "SourceAlignment":
        """The alignment of ``sources[indices]`` (a copy holding those sources' keys, faces and detections;
        the counts are recomputed from the faces kept)."""
        part = copy.copy(self)
        part.keys, part.found, part.faces = ([seq[j] for j in indices] for seq in (self.keys, self.found, self.faces))
        part.misses = sum(face is None for face in part.faces)
        part.multi = sum(len(found) > 1 for found in part.found)
        part.small = sum(face is not None and self.aligner.upscale(face) > MAX_UPSCALE for face in part.faces)
        return part

    def warp(self, j: int, image: Image.Image) -> np.ndarray | None:
        """Source ``j``'s aligned face, uint8 RGB ``(H, W, 3)``, or ``None`` when it had no face."""
        face = self.faces[j]
        return None if face is None else self.aligner.warp(np.asarray(image), face)
