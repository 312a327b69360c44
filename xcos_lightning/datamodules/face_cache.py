"""On-disk cache of decoded, preprocessed faces, so a second evaluation of the same set skips decoding and detection.

One file per (image list, face size) under ``<cache folder>/faces/`` (the landmark cache's folder:
``XCOS_CACHE_DIR``, else ``$XDG_CACHE_HOME/xcos_lightning``, else ``~/.cache/xcos_lightning``; data folders may
be read-only). Layout: 8-byte magic, 8-byte little-endian header length, the faces as one uint8 array
``(M, H, W, 3)`` read through ``np.memmap``, then a JSON header: each row's key (the source's content hash plus
its preprocessing: crop or alignment with the landmarks used) and each row's CRC-32.

Why it is safe:
- a changed source file has another content key, so its row misses and is decoded again (other rows are kept);
- a file is written under a temporary name and moved into place with ``os.replace``, so a reader sees either
  the old or the new complete file; two processes filling the same cache each write their own temporary file
  and the last rename wins, leaving one valid cache;
- a truncated or otherwise unreadable file, or a row whose CRC does not match, is warned about and rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np

from xcos_lightning.align import default_cache_dir

MAGIC = b"XCOSFC01"
_PREFIX = len(MAGIC) + 8  # magic + header length


def set_key(names: list[str], shape: tuple[int, int]) -> str:
    """File name stem of a list of images (``names``: stable per-image identities such as resolved paths) at
    ``shape`` ``(H, W)``: the same list finds the same file, whose rows are then checked one by one."""
    digest = hashlib.blake2b(f"{shape[0]}x{shape[1]}\n".encode(), digest_size=16)
    for name in names:
        digest.update(name.encode("utf-8", "surrogateescape") + b"\n")
    return digest.hexdigest()


def _crc(rows: np.ndarray) -> list[int]:
    return [zlib.crc32(np.ascontiguousarray(row).data) for row in rows]


class FaceCache:
    """Folder of face files: :meth:`read` the rows still valid, :meth:`writer` a new file.

    ``folder``: where the ``faces/`` files live (default: the user's cache folder, see the module docstring).
    """

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder or default_cache_dir()) / "faces"

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.faces"

    def read(self, key: str, row_keys: list[str], shape: tuple[int, int]) -> tuple[np.ndarray | None, np.ndarray]:
        """``(faces, valid)``: the file ``key`` memory-mapped, uint8 ``(M, H, W, 3)`` (``None`` when there is
        no usable file), and bool ``(M,)``: rows whose stored key equals ``row_keys`` and whose bytes pass
        their CRC. A file that cannot be read is warned about and treated as absent (it is rebuilt)."""
        path, m = self.path(key), len(row_keys)
        none = (None, np.zeros(m, dtype=bool))
        if not path.exists():
            return none
        try:
            faces, header = _open(path)
        except (OSError, ValueError) as exc:
            warnings.warn(f"face cache {path} is unreadable ({exc}); rebuilding it", RuntimeWarning, stacklevel=2)
            return none
        if faces.shape[1:3] != tuple(shape) or len(header["keys"]) != m:
            return none  # another image list hashed to this name: impossible in practice, rebuilt if it happens
        valid = np.asarray(header["keys"], dtype=object) == np.asarray(row_keys, dtype=object)
        rows = np.flatnonzero(valid)
        bad = [int(i) for i, c in zip(rows, _crc(faces[rows])) if c != header["crc"][i]]
        if bad:
            warnings.warn(f"face cache {path}: {len(bad)} rows fail their checksum (first: row {bad[0]}); "
                          "decoding them again", RuntimeWarning, stacklevel=2)
            valid[bad] = False
        return faces, valid

    def writer(self, key: str, row_keys: list[str], shape: tuple[int, int]) -> "FaceFileWriter":
        return FaceFileWriter(self.path(key), row_keys, shape)


def _open(path: Path) -> tuple[np.ndarray, dict]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(_PREFIX)
        if len(prefix) < _PREFIX or prefix[:len(MAGIC)] != MAGIC:
            raise ValueError("not a face cache file")
        (header_len,) = struct.unpack("<Q", prefix[len(MAGIC):])
        if header_len == 0 or header_len > size - _PREFIX:
            raise ValueError(f"truncated: {size} bytes")
        f.seek(size - header_len)
        header = json.loads(f.read(header_len))
    m, (h, w) = len(header["keys"]), header["shape"]
    if _PREFIX + m * h * w * 3 + header_len != size or len(header["crc"]) != m:
        raise ValueError(f"truncated or inconsistent: {size} bytes for {m} faces of {h}x{w}")
    faces = np.memmap(path, dtype=np.uint8, mode="r", offset=_PREFIX, shape=(m, h, w, 3)) if m else \
        np.zeros((0, h, w, 3), np.uint8)
    return faces, header


class FaceFileWriter:
    """A new face file filled row by row (:meth:`put`), moved into place by :meth:`commit` only once every row
    is filled; :meth:`discard` (or an exception inside ``with``) removes the temporary file."""

    def __init__(self, path: Path, row_keys: list[str], shape: tuple[int, int]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.keys, self.shape = path, list(row_keys), tuple(shape)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        os.close(fd)
        self.tmp = Path(tmp)
        m, (h, w) = len(self.keys), self.shape
        with open(self.tmp, "wb") as f:
            f.write(MAGIC + struct.pack("<Q", 0))  # header length 0 = incomplete until commit
            f.truncate(_PREFIX + m * h * w * 3)
        self.faces = (np.memmap(self.tmp, dtype=np.uint8, mode="r+", offset=_PREFIX, shape=(m, h, w, 3))
                      if m else np.zeros((0, h, w, 3), np.uint8))
        self.filled = np.zeros(m, dtype=bool)

    def put(self, rows: np.ndarray, faces: np.ndarray) -> None:
        """Store uint8 ``faces`` ``(B, H, W, 3)`` at ``rows`` ``(B,)``."""
        self.faces[rows] = faces
        self.filled[rows] = True

    def commit(self) -> Path:
        if not self.filled.all():
            missing = np.flatnonzero(~self.filled)
            self.discard()
            raise RuntimeError(f"face cache {self.path}: {len(missing)} rows never filled (first {missing[0]})")
        if isinstance(self.faces, np.memmap):
            self.faces.flush()
        header = json.dumps({"keys": self.keys, "shape": list(self.shape), "crc": _crc(self.faces)}).encode()
        del self.faces
        with open(self.tmp, "r+b") as f:
            f.seek(0, os.SEEK_END)
            f.write(header)
            f.seek(len(MAGIC))
            f.write(struct.pack("<Q", len(header)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(self.tmp, self.path)
        return self.path

    def discard(self) -> None:
        self.faces = None
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "FaceFileWriter":
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is not None:
            self.discard()
