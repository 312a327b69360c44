"""Tiny synthetic images and folders for the data-reader tests (real data comes through ``shared_dir``)."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image


def encode(seed: int, size: int = 16, fmt: str = "PNG", mode: str = "RGB") -> bytes:
    """Deterministic noise image ``size`` x ``size`` encoded as ``fmt``."""
    rng = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    pixels = rng.integers(0, 256, (size, size, channels), dtype=np.uint8).squeeze()
    buf = io.BytesIO()
    Image.fromarray(pixels, mode).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="session")
def image_bytes() -> Callable[..., bytes]:
    return encode


@pytest.fixture(scope="session")
def identity_tree() -> Callable[..., Path]:
    """Builds ``root/<name>/<name>_%04d.<ext>`` for ``{name: count}`` and returns ``root``."""

    def build(root: Path, counts: dict[str, int], size: int = 16, fmt: str = "PNG", ext: str = ".png") -> Path:
        for n, (name, count) in enumerate(sorted(counts.items())):
            folder = root / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(1, count + 1):
                (folder / f"{name}_{i:04d}{ext}").write_bytes(encode(1000 * n + i, size, fmt))
        return root

    return build
