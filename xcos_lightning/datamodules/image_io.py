"""Decode, crop, resize and encode face images; every reader of this package goes through here.

Arrays are uint8 RGB ``(H, W, 3)``; tensors handed to models are float32 RGB ``(3, H, W)`` in ``[0, 1]``.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from xcos_lightning.errors import DataFormatError

# A corrupt header can claim a huge canvas that PIL would allocate before noticing the data is missing;
# 64 Mpx is far above any face image and keeps a bad file from taking gigabytes of memory.
MAX_PIXELS = 1 << 26
# Formats that can be stored unchanged in a .rec/.bin: readers of those files (ours, insightface) decode them.
STORABLE_FORMATS = ("JPEG", "PNG")
# 16/32-bit grayscale: PIL's RGB conversion clips them at 255, which turns a 16-bit face white.
HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def _decode(source: bytes | Path, where: str) -> tuple[Image.Image, str | None]:
    """(RGB image, stored format such as "JPEG"); any failure becomes a DataFormatError naming ``where``."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            if img.width * img.height > MAX_PIXELS:
                raise DataFormatError(f"{where}: image claims {img.width}x{img.height} pixels, "
                                      "more than a face image can have")
            if img.mode in HIGH_DEPTH_MODES:
                values = np.asarray(img, dtype=np.float64)
                peak = 65535.0 if values.max() > 255 else 255.0
                scaled = (values.clip(0, peak) * (255 / peak)).round().astype(np.uint8)
                rgb = Image.fromarray(scaled).convert("RGB")
            else:
                rgb = img.convert("RGB")
            # camera photos store their rotation as an EXIF tag; applied here so every reader sees it upright
            orientation = img.getexif().get(0x0112, 1)
            if orientation != 1:
                exif = rgb.getexif()
                exif[0x0112] = orientation
                rgb.info["exif"] = exif.tobytes()
                rgb = ImageOps.exif_transpose(rgb)
            return rgb, img.format
    except DataFormatError:
        raise
    except Exception as exc:  # PIL plugins raise many unrelated types on bad data (OSError, SyntaxError, ...)
        raise _undecodable(where, exc) from exc


def _undecodable(where: str, exc: Exception) -> DataFormatError:
    return DataFormatError(f"{where}: cannot decode image ({type(exc).__name__}: {exc}); re-export it as JPEG or PNG")


def image_shape(source: bytes | Path, where: str) -> tuple[int, int]:
    """``(H, W)`` of the image :func:`open_image` makes of ``source`` (EXIF rotation applied), read from the
    header alone: no pixel is decoded."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            turned = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF orientations that swap width and height
            return (img.width, img.height) if turned else (img.height, img.width)
    except Exception as exc:
        raise _undecodable(where, exc) from exc


def open_image(source: bytes | Path, where: str) -> Image.Image:
    """Decode encoded bytes or an image file (any format PIL reads; grayscale, 16-bit, palette, RGBA and CMYK
    included) into 8-bit RGB, turned upright by its EXIF orientation.

    ``where`` names the file or record in the DataFormatError raised for undecodable data.
    """
    return _decode(source, where)[0]


def as_hw(size: int | Sequence[int]) -> tuple[int, int]:
    """A face size as ``(H, W)``: ``112`` is ``(112, 112)``; ``(112, 96)`` stays."""
    if isinstance(size, int):
        return size, size
    h, w = (int(v) for v in size)
    return h, w


def crop_box(img_size: tuple[int, int], size: int | Sequence[int], crop: int,
             crop_center: tuple[float, float] | None = None) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` of the crop of ``prepare``: ``crop`` px high around ``crop_center`` (default
    the image centre), as wide as the face's aspect asks (``crop * W / H``; a square for square faces)."""
    h, w = as_hw(size)
    width, height = img_size
    crop_w = round(crop * w / h)
    cx, cy = crop_center if crop_center is not None else (width / 2, height / 2)
    left, top = round(cx - crop_w / 2), round(cy - crop / 2)
    return left, top, left + crop_w, top + crop


def largest_crop(img_size: tuple[int, int], size: int | Sequence[int]) -> int:
    """Height in px of the largest centred region of the face's aspect (``size``: ``S`` or ``(H, W)``) inside an
    image of ``img_size`` ``(width, height)``: the crop of :func:`prepare` when none is given."""
    h, w = as_hw(size)
    return min(img_size[1], img_size[0] * h // w)


def prepare(img: Image.Image, size: int | Sequence[int], crop: int | None = None,
            crop_center: tuple[float, float] | None = None, where: str = "image") -> np.ndarray:
    """Cut the :func:`crop_box` of ``crop`` px around ``crop_center`` (default: image centre), resize to ``size``
    (``S`` or ``(H, W)``); one rule for every face size: the crop has the face's aspect ratio. Without ``crop``
    the :func:`largest_crop` around the image centre (the whole image when its aspect is the face's): a
    non-square photo is cut, never stretched, by every command.

    Returns uint8 RGB ``(H, W, 3)``. A crop box leaving the image raises instead of padding silently.
    """
    h, w = as_hw(size)
    if crop is None:
        crop, crop_center = largest_crop(img.size, (h, w)), None
    left, top, right, bottom = crop_box(img.size, (h, w), crop, crop_center)
    if left < 0 or top < 0 or right > img.width or bottom > img.height:
        cx, cy = crop_center if crop_center is not None else (img.width / 2, img.height / 2)
        raise DataFormatError(
            f"{where}: crop {crop} px around ({cx}, {cy}) leaves the {img.width}x{img.height} image; "
            "pick a smaller crop or the right centre")
    if (left, top, right, bottom) != (0, 0, img.width, img.height):
        img = img.crop((left, top, right, bottom))
    if img.size != (w, h):
        img = img.resize((w, h), Image.Resampling.BILINEAR)
    return np.array(img, dtype=np.uint8)  # a copy: transforms may write into it


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 RGB ``(H, W, 3)`` -> float32 RGB ``(3, H, W)`` in ``[0, 1]``."""
    chw = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)
    chw /= 255.0
    return torch.from_numpy(chw)


def encode_image(image: np.ndarray, fmt: str = "JPEG", quality: int = 95) -> bytes:
    """uint8 RGB ``(H, W, 3)`` -> encoded bytes (JPEG quality 95 as insightface's packers use, or PNG)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buf.getvalue()


def encode_for_storage(source: bytes | Path, size: int | Sequence[int], crop: int | None = None,
                       crop_center: tuple[float, float] | None = None, where: str = "image",
                       fmt: str = "JPEG") -> bytes:
    """Encoded bytes of the ``size`` x ``size`` face for a .rec/.bin.

    The original bytes are kept when nothing changes (no crop, already ``size`` x ``size``, JPEG/PNG), so
    packing an aligned set costs no re-compression; otherwise the prepared image is encoded as ``fmt``.
    """
    img, stored_format = _decode(source, where)
    h, w = as_hw(size)
    if crop is None and img.size == (w, h) and stored_format in STORABLE_FORMATS:
        return source if isinstance(source, bytes) else Path(source).read_bytes()
    return encode_image(prepare(img, size, crop, crop_center, where), fmt)
