"""Pure-Python MXNet RecordIO (``.rec`` + ``.idx``), byte-compatible with mxnet/dmlc-core, without mxnet.

Framing (little endian): uint32 magic 0xCED7230A, uint32 lrec (top 3 bits cflag, low 29 bits length),
payload, zero padding to 4 bytes. dmlc-core's writer cuts a payload at every 4-byte-aligned occurrence
of the magic number (so a corrupted stream can be resynchronised by scanning for magic) and drops that
occurrence; the parts carry cflag 1 (start), 2 (middle), 3 (end), and readers must re-insert the magic
between parts. ``.idx`` lines are ``key<TAB>offset``. An image record's payload is the struct ``<IfQQ``
(flag, label, id, id2), then ``flag`` float32 labels if flag > 0, then the encoded image.
"""
from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Sequence

import numpy as np

from xcos_lightning.datamodules.image_io import open_image
from xcos_lightning.errors import DataFormatError

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
MAX_LENGTH = (1 << 29) - 1  # the 29 length bits of lrec
_LREC = struct.Struct("<II")
_HEADER = struct.Struct("<IfQQ")


@dataclass(frozen=True)
class RecordHeader:
    """Payload header: ``labels`` is ``(label,)`` when ``flag == 0``, else the ``flag`` float32 labels."""

    flag: int
    labels: tuple[float, ...]
    id: int
    id2: int

    @property
    def label(self) -> float:
        return self.labels[0]


def pack_payload(label: float | Sequence[float], image: bytes, id: int = 0, id2: int = 0) -> bytes:
    """Header + image bytes, as ``mxnet.recordio.pack``: a sequence label is stored as flag float32s."""
    if isinstance(label, (int, float)):
        return _HEADER.pack(0, float(label), id, id2) + image
    labels = np.asarray(label, dtype="<f4")
    return _HEADER.pack(len(labels), 0.0, id, id2) + labels.tobytes() + image


def unpack_payload(payload: bytes, where: str) -> tuple[RecordHeader, bytes]:
    """Split a record payload into its header and the encoded image (possibly empty)."""
    if len(payload) < _HEADER.size:
        raise DataFormatError(f"{where}: {len(payload)}-byte payload is shorter than the 24-byte record header")
    flag, label, id_, id2 = _HEADER.unpack_from(payload)
    start = _HEADER.size + 4 * flag
    if flag == 0:
        return RecordHeader(0, (label,), id_, id2), payload[_HEADER.size:]
    if len(payload) < start:
        raise DataFormatError(f"{where}: header announces {flag} labels but the payload has {len(payload)} bytes")
    labels = tuple(float(x) for x in np.frombuffer(payload, dtype="<f4", count=flag, offset=_HEADER.size))
    return RecordHeader(flag, labels, id_, id2), payload[start:]


def frame(payload: bytes) -> bytes:
    """Payload -> on-disk record bytes, cut at aligned magic numbers exactly as dmlc-core's writer does."""
    if len(payload) > MAX_LENGTH:
        raise DataFormatError(f"a {len(payload)}-byte record exceeds RecordIO's limit of {MAX_LENGTH} bytes")
    cuts, i = [], payload.find(MAGIC_BYTES)
    while i >= 0:
        if i % 4 == 0:
            cuts.append(i)
        i = payload.find(MAGIC_BYTES, i + (4 if i % 4 == 0 else 1))
    out, start = [], 0
    for n, cut in enumerate(cuts):
        out += [_LREC.pack(MAGIC, (1 if n == 0 else 2) << 29 | (cut - start)), payload[start:cut]]
        start = cut + 4
    out += [_LREC.pack(MAGIC, (3 if cuts else 0) << 29 | (len(payload) - start)), payload[start:]]
    return b"".join(out) + b"\0" * (-len(payload) % 4)


def _read_idx(path: Path) -> dict[int, int]:
    offsets: dict[int, int] = {}
    for n, line in enumerate(path.read_text(encoding="ascii", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or not all(f.isdigit() and len(f) <= 20 for f in fields):
            raise DataFormatError(f"{path}:{n}: expected 'key<TAB>offset' with two integers, got {line[:80]!r}")
        key, offset = int(fields[0]), int(fields[1])
        if key in offsets:
            raise DataFormatError(f"{path}:{n}: key {key} appears twice; rebuild the .idx")
        offsets[key] = offset
    if not offsets:
        raise DataFormatError(f"{path}: the index is empty; rebuild it (or delete it to scan the .rec)")
    return offsets


class RecordIOReader:
    """Random access to a ``.rec`` through its ``.idx``; safe to share with DataLoader workers.

    ``idx_path`` defaults to the ``.idx`` beside the ``.rec``; without one the ``.rec`` is scanned once
    and records get keys 0, 1, 2, ... in file order (what ``mxnet.recordio.MXRecordIO`` yields).
    ``image_keys`` follows insightface: if record 0 has flag > 0 (MS1M-style header) the images are keys
    ``1 .. label[0] - 1``; otherwise every record in ``.idx`` order is an image.
    """

    def __init__(self, rec_path: str | Path, idx_path: str | Path | None = None):
        self.rec_path = Path(rec_path)
        if not self.rec_path.is_file():
            raise DataFormatError(f"{self.rec_path}: RecordIO file not found")
        self._size = self.rec_path.stat().st_size
        self._handle: BinaryIO | None = None
        self._pid = -1
        default_idx = self.rec_path.with_suffix(".idx")
        if idx_path is not None or default_idx.is_file():
            self.idx_path: Path | None = Path(idx_path or default_idx)
            if not self.idx_path.is_file():
                raise DataFormatError(f"{self.idx_path}: index file not found")
            self.offsets = _read_idx(self.idx_path)
        else:
            self.idx_path = None
            self.offsets = self._scan()
        # A record must end before the next record starts: that catches a corrupted length field.
        bounds = sorted(set(self.offsets.values())) + [self._size]
        self._limit = {o: min(nxt, self._size) for o, nxt in zip(bounds, bounds[1:])}
        self.keys = list(self.offsets)
        self.image_keys = self._find_image_keys()

    def __len__(self) -> int:
        return len(self.image_keys)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handle": None, "_pid": -1}

    def _file(self) -> BinaryIO:
        # An inherited handle shares its file position with the parent (fork): every process opens its own.
        if self._handle is None or self._pid != os.getpid():
            self._handle, self._pid = open(self.rec_path, "rb"), os.getpid()
        return self._handle

    def close(self) -> None:
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle = None

    def _read_at(self, key: int, offset: int, limit: int, need: int | None = None) -> tuple[bytes, int]:
        """(payload, end offset) of the record at ``offset``; with ``need``, only its first ``need`` bytes."""
        f = self._file()
        parts: list[bytes] = []
        pos, have = offset, 0
        while True:
            where = f"{self.rec_path}: record {key} (part at offset {pos})"
            if pos >= self._size:  # seeking far past the end fails with EINVAL on some file systems
                raise DataFormatError(f"{where}: the offset lies past the end of the file ({self._size} bytes): "
                                      "the .rec is truncated or the .idx belongs to another .rec")
            f.seek(pos)
            head = f.read(_LREC.size)
            if len(head) < _LREC.size:
                raise DataFormatError(f"{where}: file ends inside the record header: the .rec is truncated")
            magic, lrec = _LREC.unpack(head)
            if magic != MAGIC:
                raise DataFormatError(f"{where}: bad magic 0x{magic:08X} (expected 0x{MAGIC:08X}); "
                                      "the file is corrupt or the .idx belongs to another .rec")
            cflag, length = lrec >> 29, lrec & MAX_LENGTH
            end = pos + _LREC.size + length + (-length % 4)
            if end > self._size:
                raise DataFormatError(f"{where}: length {length} runs past the end of the file "
                                      f"({self._size} bytes): the .rec is truncated or the length is wrong")
            if end > limit:
                raise DataFormatError(f"{where}: wrong length {length}: it overruns the next record at offset {limit}")
            if cflag not in ((0, 1) if not parts else (2, 3)):
                raise DataFormatError(f"{where}: part flag {cflag} out of sequence (expected "
                                      f"{'0 or 1' if not parts else '2 or 3'}); the record is corrupt")
            take = length if need is None else max(0, min(length, need - have))
            parts.append(f.read(take))
            have += take
            if cflag in (0, 3) or (need is not None and have >= need):
                return MAGIC_BYTES.join(parts), end
            have += len(MAGIC_BYTES)
            pos = end

    def _scan(self) -> dict[int, int]:
        offsets, pos = {}, 0
        while pos < self._size:
            offsets[len(offsets)] = pos
            pos = self._read_at(len(offsets) - 1, pos, self._size)[1]
        if not offsets:
            raise DataFormatError(f"{self.rec_path}: empty RecordIO file")
        return offsets

    def _locate(self, key: int) -> tuple[int, int]:
        if key not in self.offsets:
            raise KeyError(f"{self.rec_path}: no record with key {key}")
        offset = self.offsets[key]
        return offset, self._limit[offset]

    def read(self, key: int) -> bytes:
        """Raw payload of record ``key`` (multi-part records joined, magic re-inserted)."""
        return self._read_at(key, *self._locate(key))[0]

    def read_header(self, key: int) -> RecordHeader:
        """Header of record ``key``, reading only its first bytes (cheap enough to scan millions of records)."""
        head = self._read_at(key, *self._locate(key), need=_HEADER.size)[0]
        flag = _HEADER.unpack_from(head)[0] if len(head) >= _HEADER.size else 0
        if flag:
            head = self._read_at(key, *self._locate(key), need=_HEADER.size + 4 * flag)[0]
        return unpack_payload(head, f"{self.rec_path}: record {key}")[0]

    def read_record(self, key: int) -> tuple[RecordHeader, bytes]:
        """(header, encoded image bytes) of record ``key``."""
        return unpack_payload(self.read(key), f"{self.rec_path}: record {key}")

    def read_image(self, key: int) -> np.ndarray:
        """Decoded image of record ``key``: uint8 RGB ``(H, W, 3)``."""
        image = self.read_record(key)[1]
        return np.array(open_image(image, f"{self.rec_path}: record {key} (offset {self.offsets[key]})"))

    def _find_image_keys(self) -> list[int]:
        if 0 not in self.offsets:
            return self.keys
        header = self.read_header(0)
        if header.flag == 0:
            return self.keys
        end = header.labels[0]
        if not (math.isfinite(end) and end >= 1 and end == int(end)):
            raise DataFormatError(f"{self.rec_path}: header record 0 has flag {header.flag} but label[0] = {end} "
                                  "is not an image count + 1 (MS1M layout)")
        count = int(end) - 1
        present = sum(1 <= k <= count for k in self.offsets)
        if present != count:
            raise DataFormatError(f"{self.rec_path}: header record 0 says images are keys 1..{count} but only "
                                  f"{present} of them are in {self.idx_path or 'the file'}")
        return list(range(1, count + 1))


class RecordIOWriter:
    """Writes ``.rec`` + ``.idx`` that mxnet's ``MXIndexedRecordIO`` and :class:`RecordIOReader` read back."""

    def __init__(self, rec_path: str | Path, idx_path: str | Path | None = None):
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path else self.rec_path.with_suffix(".idx")
        self._rec = open(self.rec_path, "wb")
        self._idx = open(self.idx_path, "w", encoding="ascii")
        self._keys: set[int] = set()

    def __enter__(self) -> "RecordIOWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._rec.close()
        self._idx.close()

    def write(self, key: int, payload: bytes) -> None:
        """Append one record; payloads holding the magic number become multi-part records."""
        if key in self._keys:
            raise ValueError(f"{self.rec_path}: key {key} written twice")
        self._keys.add(key)
        self._idx.write(f"{key}\t{self._rec.tell()}\n")
        self._rec.write(frame(payload))

    def write_image(self, key: int, image: bytes, label: float | Sequence[float], id2: int = 0) -> None:
        """Append an image record (header id = key, as insightface's packers write it)."""
        self.write(key, pack_payload(label, image, id=key, id2=id2))

    def write_header_record(self, num_images: int) -> None:
        """MS1M-style record 0: flag 2, labels (N+1, N+1) -> images are keys 1..N, no identity records."""
        self.write(0, pack_payload([num_images + 1, num_images + 1], b""))

    def write_property(self, num_classes: int, height: int = 112, width: int = 112) -> Path:
        """Write ``property`` ("num_classes,H,W") beside the ``.rec``, as insightface expects."""
        path = self.rec_path.parent / "property"
        path.write_text(f"{num_classes},{height},{width}\n", encoding="ascii")
        return path
