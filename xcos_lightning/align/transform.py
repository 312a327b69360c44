"""Five-point similarity alignment onto the ArcFace template, and the warps in both directions.

Points are ``(5, 2)`` float ``(x, y)`` pixel coordinates in this order: left eye, right eye, nose tip, left
mouth corner, right mouth corner ("left" = the image's left). A 2 x 3 ``matrix`` maps photo coordinates to
aligned-face coordinates: ``[x', y'] = matrix @ [x, y, 1]``.
"""
from __future__ import annotations

import cv2
import numpy as np

from xcos_lightning.constants import FACE_SIZE as TEMPLATE_SIZE  # the side ARCFACE_TEMPLATE is given for

# insightface's ArcFace template for 112 x 112 crops (the xCos paper and every MS1M/LFW .rec/.bin use it).
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)


def template(size: tuple[int, int]) -> np.ndarray:
    """The five target points ``(5, 2)`` for an ``H x W`` face: the 112 x 112 template scaled by ``H / 112``
    and centred horizontally. For 112 x 96 this is the SphereFace-style crop (x shifted by -8), for 224 x 224
    the template doubled."""
    h, w = size
    scale = h / TEMPLATE_SIZE
    points = ARCFACE_TEMPLATE * scale
    points[:, 0] += (w - TEMPLATE_SIZE * scale) / 2
    return points


def similarity_matrix(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation; no reflection) taking
    ``src`` ``(..., K, 2)`` onto ``dst`` ``(..., K, 2)`` (leading dimensions broadcast: many faces onto one
    template in one call), as ``(..., 2, 3)`` float64 matrices (Umeyama, 1991)."""
    src, dst = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    src_mean, dst_mean = src.mean(-2, keepdims=True), dst.mean(-2, keepdims=True)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = np.swapaxes(dst_c, -1, -2) @ src_c / src.shape[-2]
    u, singular, vt = np.linalg.svd(cov)
    sign = np.sign(np.linalg.det(u) * np.linalg.det(vt))
    d = np.stack([np.ones_like(sign), np.where(sign == 0, 1.0, sign)], -1)  # no mirror image
    rotation = (u * d[..., None, :]) @ vt
    scale = (singular * d).sum(-1) / src_c.var(-2).sum(-1)
    linear = scale[..., None, None] * rotation
    shift = dst_mean[..., 0, :] - (linear @ src_mean[..., 0, :, None])[..., 0]
    return np.concatenate([linear, shift[..., None]], -1)


def alignment_matrix(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(..., 2, 3)`` matrices taking faces' five ``points`` ``(..., 5, 2)`` onto the template of an ``H x W``
    face."""
    return similarity_matrix(points, template(size))


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``points`` ``(K, 2)`` mapped by a ``(2, 3)`` matrix."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def invert(matrix: np.ndarray) -> np.ndarray:
    """The inverse ``(2, 3)`` of a ``(2, 3)`` similarity/affine matrix."""
    return cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))


def scale_of(matrix: np.ndarray) -> float:
    """How much the matrix enlarges: > 1 when a face smaller than the template is upscaled."""
    return float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))


def warp_face(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 RGB photo ``(H, W, 3)`` -> the aligned face, uint8 RGB ``(h, w, 3)`` for ``size = (h, w)``;
    bilinear, outside the photo black (as insightface's ``norm_crop``)."""
    h, w = size
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)


def warp_back(face_map: np.ndarray, matrix: np.ndarray, photo_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A float map ``(h, w)`` computed on the aligned face, drawn into photo coordinates.

    Returns ``(map, inside)``: float32 ``(H, W)`` for ``photo_size = (H, W)`` (0 outside the face) and a bool
    ``(H, W)`` mask of the photo pixels that the aligned face covers.
    """
    h, w = face_map.shape
    height, width = photo_size
    inverse = invert(matrix)
    out, coverage = (cv2.warpAffine(np.asarray(m, dtype=np.float32), inverse, (width, height), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                     for m in (face_map, np.ones((h, w))))
    inside = coverage > 0.5
    out[~inside] = 0  # the bilinear edge would otherwise fade the map into the photo around the face
    return out, inside
