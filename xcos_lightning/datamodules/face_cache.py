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
import sys
import tempfile
import warnings
import zlib
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from xcos_lightning.align import default_cache_dir
from xcos_lightning.datamodules.image_io import as_hw
from xcos_lightning.datamodules.pair_set import PairSet

MAGIC = b"XCOSFC01"
_PREFIX = len(MAGIC) + 8  # magic + header length


def set_key(names: list[str], shape: tuple[int, int]) -> str:
    """File name stem of a list of images (``names``: stable per-image identities such as resolved paths) at
    ``shape`` ``(H, W)``: the same list finds the same file, whose rows are then checked one by one."""
    digest = hashlib.blake2b(f"{shape[0]}x{shape[1]}\n".encode(), digest_size=16)
    for name in names:
        digest.update(name.encode("utf-8", "surrogateescape") + b"\n")
    return digest.hexdigest()


def _crc(faces: np.ndarray, rows: Iterable[int]) -> list[int]:
    """CRC-32 of each of ``rows`` of uint8 ``faces`` ``(M, H, W, 3)``, read in place (a memory map is not copied)."""
    plain = np.asarray(faces)
    return [zlib.crc32(np.ascontiguousarray(plain[i]).data) for i in rows]


class FaceCache:
    """Folder of face files: :meth:`read` (or :meth:`map`) the rows still valid, :meth:`writer` a new file.

    ``folder``: where the ``faces/`` files live (default: the user's cache folder, see the module docstring).
    """

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder or default_cache_dir()) / "faces"

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.faces"

    def map(self, key: str, row_keys: list[str], shape: tuple[int, int]) -> tuple[np.ndarray | None, np.ndarray]:
        """``(faces, valid)``: the file ``key`` memory-mapped, uint8 ``(M, H, W, 3)`` (``None`` when there is
        no usable file), and bool ``(M,)``: rows whose stored key equals ``row_keys``. A file that cannot be
        read is warned about and treated as absent (it is rebuilt). Checksums are not read: see :meth:`read`."""
        return self._map(key, row_keys, shape)[:2]

    def _map(self, key: str, row_keys: list[str], shape: tuple[int, int]):
        path, m = self.path(key), len(row_keys)
        none = (None, np.zeros(m, dtype=bool), [])
        if not path.exists():
            return none
        try:
            faces, header = _open(path)
        except (OSError, ValueError) as exc:
            warnings.warn(f"face cache {path} is unreadable ({exc}); rebuilding it", RuntimeWarning, stacklevel=4)
            return none
        if faces.shape[1:3] != tuple(shape) or len(header["keys"]) != m:
            return none  # another image list hashed to this name: impossible in practice, rebuilt if it happens
        return faces, np.asarray(header["keys"], dtype=object) == np.asarray(row_keys, dtype=object), header["crc"]

    def read(self, key: str, row_keys: list[str], shape: tuple[int, int]) -> tuple[np.ndarray | None, np.ndarray]:
        """:meth:`map`, and rows whose bytes fail their CRC-32 (warned about) marked invalid, so they are
        decoded again (one pass over the file: ~0.3 s for LFW's 7,701 faces)."""
        faces, valid, crc = self._map(key, row_keys, shape)
        rows = np.flatnonzero(valid)
        bad = [int(i) for i, c in zip(rows, _crc(faces, rows)) if c != crc[i]] if len(rows) else []
        if bad:
            warnings.warn(f"face cache {self.path(key)}: {len(bad)} rows fail their checksum (first: row "
                          f"{bad[0]}); decoding them again", RuntimeWarning, stacklevel=2)
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
    is filled; :meth:`discard` removes the temporary file."""

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
        crc = _crc(self.faces, range(len(self.keys)))
        header = json.dumps({"keys": self.keys, "shape": list(self.shape), "crc": crc}).encode()
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


class DistinctImages(Dataset):
    """The distinct faces of a :class:`PairSet` (equal :meth:`PairSet.face_keys`: same content, same
    preprocessing; without ``cache`` or alignment: the same source), each decoded (and aligned) once, or read
    from ``cache`` when it holds them.

    Item ``k``: ``{"index": k, "face": uint8 (H, W, 3) RGB}``. ``slot`` int64 ``(2N,)``: the item holding pair
    image ``j`` (``2i`` = side a, ``2i + 1`` = side b of pair ``i``). Items are numbered in the order their
    pairs come in ``pair_order`` (a permutation of the pair indices; default: pair order), so a prefix of the
    items completes a prefix of those pairs (``limit_val_batches``). ``valid`` bool ``(M,)``: items the cache
    holds; ``cached`` their memory-mapped ``(M, H, W, 3)`` array (``None`` without a cache file).
    """

    def __init__(self, pair_set: PairSet, cache: FaceCache | None = None, pair_order: Iterable[int] | None = None) -> None:
        self.pair_set, self.cache = pair_set, cache
        # Without a cache nothing needs content keys unless the aligner made them already: the same source is
        # the same face (a renamed copy is then decoded twice), and no file is read before its decoding.
        keyed = cache is not None or pair_set.alignment is not None
        keys, item_of = pair_set.face_keys() if keyed else pair_set.sources, {}
        self.first: list[int] = []  # pair image index of each item's first occurrence
        slot = torch.empty(len(keys), dtype=torch.long)
        for i in range(len(pair_set)) if pair_order is None else pair_order:
            for j in (2 * i, 2 * i + 1):
                if keys[j] not in item_of:
                    item_of[keys[j]] = len(self.first)
                    self.first.append(j)
                slot[j] = item_of[keys[j]]
        self.slot = slot
        self.keys = [keys[j] for j in self.first]
        self.shape = as_hw(pair_set.size)
        self.cached, self.valid = None, np.zeros(len(self.first), dtype=bool)
        if cache is not None:
            self.cache_key = set_key([pair_set.source_name(j) for j in self.first], self.shape)
            self.cached, self.valid = cache.read(self.cache_key, self.keys, self.shape)

    def __len__(self) -> int:
        return len(self.first)

    def __getitem__(self, k: int) -> dict:
        if self.valid[k] and self.cached is None:  # a DataLoader worker maps the file itself
            self.cached, self.valid = self.cache.map(self.cache_key, self.keys, self.shape)
        face = self.cached[k] if self.valid[k] else self.pair_set.load_image(self.first[k])
        return {"index": k, "face": torch.from_numpy(np.array(face, dtype=np.uint8))}

    def __getstate__(self) -> dict:
        # workers get the file's name, not the mapped rows (pickling a memmap copies all of them)
        return {**self.__dict__, "cached": None}

    def fill(self, num_workers: int = 0, batch_size: int = 64, progress: bool = False,
             desc: str = "decoding") -> "DistinctImages":
        """Decode the faces the cache misses (``num_workers`` DataLoader workers) and store them, so that every
        item is then read from the cache; returns ``self``. Without a cache: nothing to do. With ``progress``, a
        bar on stderr counts the faces decoded."""
        if self.cache is not None and not self.valid.all():
            with tqdm(total=int((~self.valid).sum()), desc=desc, unit="img", file=sys.stderr, disable=not progress,
                      dynamic_ncols=True) as bar:
                for rows, _ in self.batches(batch_size, num_workers, hits=False):
                    bar.update(len(rows))
            # the file was just written from these rows: mapping it is enough, no second checksum pass
            self.cached, self.valid = self.cache.map(self.cache_key, self.keys, self.shape)
        return self

    def batches(self, batch_size: int, num_workers: int, pin_memory: bool = False,
                hits: bool = True) -> Iterator[tuple[Tensor, Tensor]]:
        """``(index (B,), face uint8 (B, H, W, 3))`` covering every item once: cached items sliced from the
        memory map in this process (left out without ``hits``: they are copied into the new file all the same),
        the rest decoded by ``num_workers`` DataLoader workers. With a cache, a complete new cache file replaces
        the old one when the last batch has been taken."""
        hit, miss = np.flatnonzero(self.valid), np.flatnonzero(~self.valid)
        for start in range(0, len(hit) if hits else 0, batch_size):
            rows = hit[start:start + batch_size]
            yield torch.from_numpy(rows), torch.from_numpy(np.asarray(self.cached[rows]))
        if not len(miss):
            return
        writer = None if self.cache is None else self.cache.writer(self.cache_key, self.keys, self.shape)
        if writer is not None and len(hit):
            writer.put(hit, self.cached[hit])
        loader = DataLoader(Subset(self, miss.tolist()), batch_size=batch_size, shuffle=False,
                            num_workers=num_workers, pin_memory=pin_memory)
        try:
            for batch in loader:
                if writer is not None:
                    writer.put(batch["index"].numpy(), batch["face"].numpy())
                yield batch["index"], batch["face"]
        except BaseException:
            if writer is not None:
                writer.discard()
            raise
        if writer is not None:
            writer.commit()
