"""Training/test sets packed as MXNet RecordIO (MS1M-ArcFace ``train.rec``, kz_celeb25 ``validation.rec``)."""
from __future__ import annotations

import warnings
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from xcos_lightning.datamodules.image_folder import Transform
from xcos_lightning.datamodules.image_io import open_image, prepare, to_tensor
from xcos_lightning.datamodules.recordio import RecordHeader, RecordIOReader
from xcos_lightning.errors import DataFormatError


def read_property(path: Path) -> tuple[int, int, int]:
    """insightface ``property`` file "num_classes,H,W" -> ``(num_classes, H, W)``."""
    text = path.read_text(encoding="ascii", errors="replace").strip()
    fields = text.split(",")
    if len(fields) != 3 or not all(f.strip().isdigit() for f in fields):
        raise DataFormatError(f"{path}: expected 'num_classes,height,width' (e.g. '85742,112,112'), got {text[:80]!r}")
    num_classes, height, width = (int(f) for f in fields)
    return num_classes, height, width


class RecordIODataset(Dataset):
    """Faces from a ``.rec`` (+ ``.idx``), same interface as :class:`IdentityFolderDataset`.

    Labels are the first header label of each image record. ``num_classes`` comes from the ``property``
    file beside the ``.rec`` when present, else ``max(label) + 1``. ``class_names`` are the label numbers
    as strings (a ``.rec`` does not store names). Items: ``(float32 (3, size, size) in [0, 1] RGB, label)``.
    With ``skip_bad_records``, records whose header cannot be read (bad magic, wrong length, truncated
    tail) are left out of the data set with one warning giving their count (``skipped_keys``); without
    it the first one raises DataFormatError naming the file and record. Headers are read on first use of
    ``labels`` or ``len()`` (seconds for MS1M).
    """

    def __init__(self, rec_path: str | Path, idx_path: str | Path | None = None, size: int = 112,
                 crop: int | None = None, transform: Transform | None = None, skip_bad_records: bool = False):
        self.reader = RecordIOReader(rec_path, idx_path)
        self.size, self.crop, self.transform = size, crop, transform
        self.skip_bad_records = skip_bad_records
        self.property_path = self.reader.rec_path.parent / "property"
        self.skipped_keys: list[int] = []

    def __len__(self) -> int:
        return len(self._index[0])

    def _label(self, key: int, header: RecordHeader) -> int:
        label = header.label
        if not (0 <= label < 2**31 and label == int(label)):
            raise DataFormatError(f"{self.reader.rec_path}: record {key} has label {label}, not a class index")
        return int(label)

    @cached_property
    def _index(self) -> tuple[list[int], np.ndarray]:
        """(record keys of the images, their int64 labels); reads every record header once."""
        keys, labels, first_error = [], [], None
        for key in self.reader.image_keys:
            try:
                labels.append(self._label(key, self.reader.read_header(key)))
                keys.append(key)
            except DataFormatError as err:
                if not self.skip_bad_records:
                    raise
                self.skipped_keys.append(key)
                first_error = first_error or err
        if self.skipped_keys:
            warnings.warn(f"{self.reader.rec_path}: left out {len(self.skipped_keys)} unreadable records "
                          f"(skip_bad_records), e.g. {first_error}", stacklevel=2)
        if self.skipped_keys and not keys:
            raise DataFormatError(f"{self.reader.rec_path}: no readable image record; re-create the .rec")
        return keys, np.asarray(labels, dtype=np.int64)

    @property
    def labels(self) -> np.ndarray:
        """int64 ``(N,)``, checked against ``num_classes`` of the ``property`` file."""
        labels = self._index[1]
        if self.property_path.is_file() and len(labels) and labels.max() >= self.num_classes:
            raise DataFormatError(f"{self.reader.rec_path}: label {labels.max()} >= num_classes {self.num_classes} "
                                  f"from {self.property_path}; the property file belongs to another data set")
        return labels

    @cached_property
    def num_classes(self) -> int:
        if self.property_path.is_file():
            return read_property(self.property_path)[0]
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    @property
    def class_names(self) -> list[str]:
        return [str(i) for i in range(self.num_classes)]

    def _prepare(self, key: int, image: bytes) -> np.ndarray:
        where = f"{self.reader.rec_path}: record {key} (offset {self.reader.offsets[key]})"
        return prepare(open_image(image, where), self.size, self.crop, where=where)

    def load_image(self, i: int) -> np.ndarray:
        """Image ``i`` after crop/resize: uint8 RGB ``(size, size, 3)``."""
        key = self._index[0][i]
        return self._prepare(key, self.reader.read_record(key)[1])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        key = self._index[0][i]
        header, image_bytes = self.reader.read_record(key)
        image = self._prepare(key, image_bytes)
        return to_tensor(self.transform(image) if self.transform else image), self._label(key, header)
