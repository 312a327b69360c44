"""Detect, choose and align faces: photos in, template-aligned faces (and the transform back) out.

Layering: this package knows arrays, not files; callers hand it a ``load(i) -> uint8 RGB (H, W, 3)`` function,
so datamodules and commands decide how photos are decoded (in DataLoader workers, overlapping detection).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from xcos_lightning.align.cache import LandmarkCache
from xcos_lightning.align.detectors import Detector, Face, create_detector
from xcos_lightning.align.transform import alignment_matrix, warp_face
from xcos_lightning.errors import DataFormatError

ON_MISS = ("error", "crop", "skip")
# A face upscaled more than this (its eyes < ~18 px apart for the 112 template) carries little detail:
# the model sees interpolation, so the user is told.
MAX_UPSCALE = 2.0


class NoFaceError(DataFormatError):
    """No face was found in a photo (or the requested ``face`` index does not exist)."""


@dataclass(frozen=True)
class Located:
    """The faces of one photo (sorted left to right by box centre, so indices read like the figure) and the
    one chosen (``None`` when none was found and the caller falls back to a centre crop)."""

    faces: tuple[Face, ...]
    chosen: int | None


class _Photos(Dataset):
    def __init__(self, load: Callable[[int], np.ndarray], indices: Sequence[int]) -> None:
        self.load, self.indices = load, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[int, np.ndarray]:
        return self.indices[k], self.load(self.indices[k])


class FaceAligner:
    """Aligns faces to the ArcFace template of an ``size = (H, W)`` model input.

    - ``detector``: a name of :func:`~xcos_lightning.align.detectors.create_detector` (``mtcnn``, ``dlib``,
      ``package.module:function``) or a detector object; ``detector_options`` go to its constructor.
    - ``face``: which face of a photo with several: ``None`` = the one whose box centre is nearest the photo
      centre; ``K`` = the K-th from the left (0-based).
    - ``on_miss``: ``"error"`` (NoFaceError naming the photo), ``"crop"`` (the caller's centre crop is used;
      misses are counted and warned) or ``"skip"`` (data sets that can lose an image leave it out; pair sets,
      which cannot, crop).
    - ``cache``: a :class:`LandmarkCache`, ``None`` for the default folder, ``False`` for none.
    """

    def __init__(self, detector: str | Detector = "mtcnn", size: tuple[int, int] = (112, 112),
                 face: int | None = None, on_miss: str = "error", cache: LandmarkCache | None | bool = None,
                 batch_size: int = 16, **detector_options) -> None:
        if on_miss not in ON_MISS:
            raise DataFormatError(f"on_miss {on_miss!r}: choose from {ON_MISS}")
        if face is not None and face < 0:
            raise DataFormatError(f"face index {face} must be >= 0")
        if isinstance(detector, str):
            if detector == "mtcnn":
                detector_options.setdefault("batch_size", batch_size)
            detector = create_detector(detector, **detector_options)
        self.detector, self.size, self.face, self.on_miss = detector, tuple(size), face, on_miss
        self.cache = None if cache is False else (cache if isinstance(cache, LandmarkCache) else LandmarkCache())
        self.batch_size = batch_size

    @property
    def key(self) -> str:
        """Detector settings that the cached landmarks depend on."""
        return self.detector.key

    def find(self, photos: Sequence[np.ndarray]) -> list[tuple[Face, ...]]:
        """Every face of each uint8 RGB photo ``(H, W, 3)``, sorted left to right (the indices of ``face``)."""
        return [tuple(sorted(f, key=lambda face: face.box[0] + face.box[2])) for f in self.detector(photos)]

    def detect(self, keys: Sequence[str], load: Callable[[int], np.ndarray], num_workers: int = 0,
               progress: bool = True, desc: str = "detecting") -> list[list[Face]]:
        """Faces of photos ``0..len(keys)-1`` (``keys[i]``: photo ``i``'s content key, ``load(i)``: its pixels).

        Cached photos are not decoded; the others are decoded by ``num_workers`` DataLoader workers while the
        detector runs on batches of ``batch_size`` photos, and are added to the cache.
        """
        cached = self.cache.get_many(list(keys), self.key) if self.cache is not None else {}
        faces: list[list[Face] | None] = [cached.get(k) for k in keys]
        todo = [i for i, f in enumerate(faces) if f is None]
        if todo:
            first_of: dict[str, int] = {}
            unique = [first_of.setdefault(keys[i], i) for i in todo if keys[i] not in first_of]
            loader = DataLoader(_Photos(load, unique), batch_size=self.batch_size, num_workers=num_workers,
                                collate_fn=list)  # photos of any size: no stacking
            found: dict[str, list[Face]] = {}
            with tqdm(total=len(unique), desc=desc, unit="photo", file=sys.stderr, disable=not progress,
                      dynamic_ncols=True) as bar:
                for batch in loader:
                    indices, photos = zip(*batch)
                    for i, f in zip(indices, self.find(list(photos))):
                        found[keys[i]] = list(f)
                    bar.update(len(batch))
                    if self.cache is not None and len(found) >= 256:
                        self.cache.put_many(found, self.key)
                        cached.update(found)
                        found = {}
            if self.cache is not None:
                self.cache.put_many(found, self.key)
            cached.update(found)
            faces = [cached[k] for k in keys]
        return faces  # type: ignore[return-value]

    def choose(self, faces: Sequence[Face], shape: tuple[int, ...] | None, where: str,
               face: int | None = None) -> Located:
        """Pick the face to align in a photo of ``shape`` ``(H, W, ...)`` (``face``: this index instead of the
        aligner's ``face``); NoFaceError naming ``where`` when there is none (unless ``on_miss`` is ``"crop"`` or
        ``"skip"``) or the requested index does not exist. ``shape`` may be ``None`` unless several faces are
        found and no index is given (the one nearest the photo's centre is picked)."""
        faces, index = tuple(faces), self.face if face is None else face
        if not faces:
            if self.on_miss == "error":
                raise NoFaceError(f"{where}: no face found (detector {self.key}); pass an aligned crop, "
                                  "or --on-miss crop to fall back to a centre crop")
            return Located(faces, None)
        if index is not None:
            if index >= len(faces):
                raise NoFaceError(f"{where}: face {index} requested but {len(faces)} found "
                                  f"(indices 0..{len(faces) - 1}, left to right)")
            return Located(faces, index)
        if len(faces) == 1:
            return Located(faces, 0)
        cy, cx = shape[0] / 2, shape[1] / 2
        distance = [(f.box[0] + f.box[2] - 2 * cx) ** 2 + (f.box[1] + f.box[3] - 2 * cy) ** 2 for f in faces]
        return Located(faces, int(np.argmin(distance)))

    def matrix(self, face: Face) -> np.ndarray:
        """``(2, 3)`` photo -> aligned-face matrix of ``face``."""
        return alignment_matrix(face.points, self.size)

    def matrices(self, faces: Sequence[Face]) -> np.ndarray:
        """``(N, 2, 3)``: :meth:`matrix` of each of ``faces``, in one call."""
        points = np.stack([f.points for f in faces]) if faces else np.zeros((0, 5, 2))
        return alignment_matrix(points, self.size)

    def warp(self, photo: np.ndarray, face: Face) -> np.ndarray:
        """The aligned face, uint8 RGB ``(H, W, 3)`` for ``size = (H, W)``."""
        return warp_face(photo, self.matrix(face), self.size)
