"""Face detectors with five landmarks, picked by name (``mtcnn``, ``dlib``) or ``package.module:function``.

A detector maps a list of uint8 RGB photos ``(H, W, 3)`` to one list of :class:`Face` per photo. Its
``key`` names the detector and every setting that moves the landmarks, so cached landmarks are reused only
for the same settings (MTCNN's points move by ~1 px on average with the minimum face size).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np
import torch

from xcos_lightning.errors import DataFormatError
from xcos_lightning.user_code import import_attribute, is_import_spec


@dataclass(frozen=True)
class Face:
    """One detected face: ``box`` ``(x1, y1, x2, y2)`` px, ``points`` ``(5, 2)`` float ``(x, y)`` px (left eye,
    right eye, nose tip, left and right mouth corner, "left" = the image's left), ``score`` in [0, 1]."""

    box: tuple[float, float, float, float]
    points: np.ndarray
    score: float

    def to_json(self) -> dict:
        return {"box": [float(v) for v in self.box], "points": [[float(x), float(y)] for x, y in self.points],
                "score": float(self.score)}

    @staticmethod
    def from_json(data: dict) -> "Face":
        return Face(tuple(float(v) for v in data["box"]), np.asarray(data["points"], dtype=np.float64),
                    float(data["score"]))


class Detector(Protocol):
    key: str

    def __call__(self, images: Sequence[np.ndarray]) -> list[list[Face]]: ...


class MTCNNDetector:
    """MTCNN (Zhang et al., 2016; the xCos paper's detector) from facenet-pytorch, whose wheel ships the
    P/R/O-Net weights (nothing is downloaded).

    Photos of equal size are detected together in one batch (``batch_size`` photos at most); ``min_face_size``
    px is the smallest face searched for (smaller = slower, finds smaller faces); ``thresholds`` are the three
    stages' score thresholds (facenet-pytorch's defaults). The networks are built on the first call: a run
    whose landmarks are all cached never imports facenet-pytorch (and torchvision with it: 2.1 s of a warm
    ``explain.py verify``'s start-up on the 2-core AMD EPYC).
    """

    def __init__(self, min_face_size: int = 20, thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
                 factor: float = 0.709, device: str | torch.device = "cpu", batch_size: int = 16) -> None:
        self.batch_size, self._mtcnn = batch_size, None
        self._options = dict(keep_all=True, min_face_size=min_face_size, thresholds=list(thresholds),
                             factor=factor, post_process=False, device=torch.device(device))
        self.key = f"mtcnn:min={min_face_size}:thr={','.join(f'{t:g}' for t in thresholds)}:factor={factor:g}"

    @property
    def mtcnn(self):
        if self._mtcnn is None:
            from facenet_pytorch import MTCNN

            self._mtcnn = MTCNN(**self._options)
        return self._mtcnn

    def __call__(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        out: list[list[Face] | None] = [None] * len(images)
        by_shape: dict[tuple, list[int]] = {}
        for i, image in enumerate(images):
            by_shape.setdefault(image.shape, []).append(i)
        for indices in by_shape.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                with torch.inference_mode():
                    boxes, scores, points = self.mtcnn.detect(np.stack([images[i] for i in chunk]), landmarks=True)
                for i, b, s, p in zip(chunk, boxes, scores, points):
                    out[i] = [] if b is None else [Face(tuple(map(float, bb)), np.asarray(pp, np.float64), float(ss))
                                                   for bb, ss, pp in zip(b, s, p)]
        return out  # type: ignore[return-value]


class DlibDetector:
    """dlib's HOG frontal-face detector plus the 68-point shape predictor of ``face_recognition_models``
    (both ship their models in the wheel), reduced to the five template points: eye centres (mean of the six
    points of each eye), nose tip (point 30), mouth corners (48, 54). Optional: ``pip install
    'xcos-lightning[dlib]'``. ``upsample`` doubles the photo that many times before detecting (finds faces
    smaller than ~80 px)."""

    def __init__(self, upsample: int = 1) -> None:
        # find_spec locates the model file without importing face_recognition_models, whose __init__ needs
        # pkg_resources (gone from current setuptools)
        models = importlib.util.find_spec("face_recognition_models")
        try:
            import dlib
        except ImportError:
            models = None
        if models is None:
            raise DataFormatError("detector 'dlib' needs dlib and face_recognition_models: "
                                  "pip install 'xcos-lightning[dlib]'")
        predictor = Path(models.submodule_search_locations[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
        self.upsample = upsample
        self.detect = dlib.get_frontal_face_detector()
        self.shape = dlib.shape_predictor(str(predictor))
        self.key = f"dlib-hog68:upsample={upsample}"

    def __call__(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        out = []
        for image in images:
            rects, scores, _ = self.detect.run(np.ascontiguousarray(image), self.upsample, 0.0)
            faces = []
            for rect, score in zip(rects, scores):
                parts = self.shape(image, rect).parts()
                xy = np.array([[p.x, p.y] for p in parts], dtype=np.float64)
                points = np.stack([xy[36:42].mean(0), xy[42:48].mean(0), xy[30], xy[48], xy[54]])
                # HOG scores are SVM margins (about 0..3): squash to (0, 1) so every detector reports one range
                faces.append(Face((rect.left(), rect.top(), rect.right(), rect.bottom()), points,
                                  float(1 / (1 + np.exp(-score)))))
            out.append(faces)
        return out


class FunctionDetector:
    """A user's ``fn(photo uint8 (H, W, 3)) -> (boxes (K, 4), points (K, 5, 2)[, scores (K,)])``, one photo per
    call; ``key`` is the SPEC (change the function's name when its landmarks change)."""

    def __init__(self, fn: Callable, spec: str) -> None:
        self.fn, self.key = fn, spec

    def __call__(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        out = []
        for image in images:
            result = self.fn(image)
            boxes, points = np.asarray(result[0], np.float64).reshape(-1, 4), np.asarray(result[1], np.float64)
            scores = np.asarray(result[2], np.float64) if len(result) > 2 else np.ones(len(boxes))
            if points.shape != (len(boxes), 5, 2) or scores.shape != (len(boxes),):
                raise DataFormatError(f"detector {self.key}: expected boxes (K, 4), points (K, 5, 2) and scores "
                                      f"(K,), got {boxes.shape}, {points.shape}, {scores.shape}")
            out.append([Face(tuple(b), p, float(s)) for b, p, s in zip(boxes, points, scores)])
        return out


DETECTORS: dict[str, Callable[..., Detector]] = {"mtcnn": MTCNNDetector, "dlib": DlibDetector}


def list_detectors() -> list[str]:
    return sorted(DETECTORS)


def register_detector(name: str, factory: Callable[..., Detector]) -> None:
    """Make ``factory(**options) -> Detector`` available as ``--align name``."""
    DETECTORS[name] = factory


def create_detector(spec: str, **options) -> Detector:
    """A registered detector by name (``options`` go to its constructor) or ``package.module:function``.

    Raises DataFormatError for unknown names and unusable SPECs.
    """
    if spec in DETECTORS:
        return DETECTORS[spec](**options)
    if is_import_spec(spec):
        module_name, _, attr = spec.partition(":")
        try:
            fn = import_attribute(spec)
        except Exception as exc:  # importing runs user code: any error means the SPEC is unusable
            raise DataFormatError(f"detector {spec!r}: cannot import {module_name!r} ({type(exc).__name__}: {exc})") from exc
        if not callable(fn):
            raise DataFormatError(f"detector {spec!r}: module {module_name!r} has no function {attr!r}")
        return FunctionDetector(fn, spec)
    raise DataFormatError(f"unknown face detector {spec!r}: choose from {list_detectors()} or give "
                          "package.module:function")
