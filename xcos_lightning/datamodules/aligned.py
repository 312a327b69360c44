"""Alignment of a list of image sources (files or encoded bytes): one detection pass, then cheap warps.

Datasets that accept ``aligner`` (:class:`~xcos_lightning.datamodules.pair_set.PairSet`,
:class:`~xcos_lightning.datamodules.image_folder.IdentityFolderDataset`) build a :class:`SourceAlignment` when
opened: every distinct photo is detected once (decoded in DataLoader workers, landmarks cached on disk by
content), the face to use is chosen, and loading an item is decode + one affine warp.
"""
from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from xcos_lightning.align import MAX_UPSCALE, FaceAligner, content_key, scale_of, warp_face
from xcos_lightning.datamodules.image_io import image_shape, open_image
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


def _where(name: str, source: Source) -> str:
    return f"{name}: {source if isinstance(source, Path) else 'image'}"


class SourceAlignment:
    """The chosen :class:`Face` of each of ``sources`` (``faces``; ``None``: no face, the caller's centre crop is
    used), its ``(2, 3)`` photo -> template matrix (``matrices``; ``None`` where ``faces`` is), every face found
    (``found``) and the content keys of the sources (``keys``).

    A source listed several times (LFW's 12,000 pair slots name 7,701 files) is read, hashed and detected once.
    Raises :class:`~xcos_lightning.align.NoFaceError` naming the first photo without a face when the aligner's
    ``on_miss`` is ``"error"``. Counts ``misses`` (centre-cropped), ``multi`` (photos with several faces) and
    ``small`` (faces upscaled more than ``MAX_UPSCALE``) over ``sources``, each warned once for the whole set
    (misses as left out when the caller ``drops_misses``, else as centre-cropped).
    """

    def __init__(self, aligner: FaceAligner, sources: Sequence[Source], name: str, num_workers: int = 0,
                 progress: bool = True, drops_misses: bool = False) -> None:
        self.aligner, self.size = aligner, aligner.size
        sources = list(sources)
        first: dict[Source, int] = {}
        of_source = [first.setdefault(s, len(first)) for s in sources]
        unique = list(first)
        keys = [content_key(read_source(s)) for s in unique]
        found = aligner.detect(keys, _Decoder(unique, name), num_workers=num_workers, progress=progress,
                               desc=f"{name}: detecting faces")
        faces = []
        for source, in_photo in zip(unique, found):
            where = _where(name, source)
            # the photo's size only picks among several faces (nearest the centre): read for those alone
            shape = image_shape(source, where) if len(in_photo) > 1 and aligner.face is None else None
            located = aligner.choose(in_photo, shape, where)
            faces.append(None if located.chosen is None else located.faces[located.chosen])
        with_face = [f for f in faces if f is not None]
        computed = iter(aligner.matrices(with_face))
        matrices = [None if f is None else next(computed) for f in faces]
        self.keys, self.found, self.faces, self.matrices = (
            [seq[u] for u in of_source] for seq in (keys, found, faces, matrices))
        self._count()
        if self.misses:
            fallback = "left out" if drops_misses else "centre-cropped instead"
            missed = [_where(name, s) for s, f in zip(sources, self.faces) if f is None]
            warnings.warn(f"{name}: no face found in {self.misses} of {len(sources)} images (detector "
                          f"{aligner.key}); {fallback}, e.g. {missed[:3]}", RuntimeWarning, stacklevel=2)
        if self.small:
            warnings.warn(f"{name}: {self.small} faces are upscaled more than {MAX_UPSCALE:g}x to fit the "
                          f"{self.size[0]}x{self.size[1]} template (small faces: the model sees interpolated pixels)",
                          RuntimeWarning, stacklevel=2)

    def _count(self) -> None:
        self.misses = sum(face is None for face in self.faces)
        self.multi = sum(len(found) > 1 for found in self.found)
        self.small = sum(m is not None and scale_of(m) > MAX_UPSCALE for m in self.matrices)

    def subset(self, indices: Sequence[int]) -> "SourceAlignment":
        """The alignment of ``sources[indices]`` (a copy holding those sources' keys, faces, matrices and
        detections; the counts are recomputed from the faces kept)."""
        part = copy.copy(self)
        part.keys, part.found, part.faces, part.matrices = (
            [seq[j] for j in indices] for seq in (self.keys, self.found, self.faces, self.matrices))
        part._count()
        return part

    def warp(self, j: int, image: Image.Image) -> np.ndarray | None:
        """Source ``j``'s aligned face, uint8 RGB ``(H, W, 3)``, or ``None`` when it had no face."""
        matrix = self.matrices[j]
        return None if matrix is None else warp_face(np.asarray(image), matrix, self.size)
