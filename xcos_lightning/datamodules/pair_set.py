"""Verification pair sets (LFW, CFP-FP, AgeDB-30, ...) from ``.bin`` files or ``pairs.txt`` + folders."""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from xcos_lightning.align import FaceAligner, content_key
from xcos_lightning.datamodules.aligned import SourceAlignment, read_source
from xcos_lightning.datamodules.image_io import as_hw, encode_image, encode_for_storage, open_image, prepare, to_tensor
from xcos_lightning.errors import VerificationSetError

Source = bytes | Path

# Part of every face key: bump it when decoding, crop/resize or warping changes the pixels they make, so the
# face caches written before are read as stale.
PREPROCESSING_VERSION = "2"  # 2: photos not of the face's aspect are cut to it (image_io.largest_crop), not stretched


class PairSet(Dataset):
    """``N`` image pairs: ``sources[2i]``, ``sources[2i+1]`` (encoded bytes or file paths), ``labels[i]``.

    ``labels`` is bool ``(N,)``, True = genuine (same identity). ``size``: ``S`` or ``(H, W)``. Each image is
    cropped ``crop`` px high around ``crop_center`` (default: image centre; the crop has the face's aspect, see
    ``image_io.prepare``) if ``crop`` is set, then resized to ``size``; after :meth:`align` its detected face is
    warped onto the template instead (the crop is the fallback of photos without a face when the aligner
    allows it). Items: ``{"img_a", "img_b": float32 (3, H, W) RGB in [0, 1], "label": bool tensor (),
    "index": int}``.
    """

    def __init__(self, sources: Sequence[Source], labels: Sequence[bool] | np.ndarray, name: str,
                 size: int | tuple[int, int] = 112, crop: int | None = None,
                 crop_center: tuple[float, float] | None = None):
        self.sources = [s if isinstance(s, (bytes, Path)) else Path(s) for s in sources]
        self.labels = np.asarray(labels, dtype=bool).reshape(-1)
        self.name, self.size, self.crop, self.crop_center = name, size, crop, crop_center
        self.alignment: SourceAlignment | None = None
        self._face_keys: list[str] | None = None
        self._real_folders: dict[str, str] = {}
        if len(self.sources) != 2 * len(self.labels):
            raise VerificationSetError(f"{name}: {len(self.sources)} images for {len(self.labels)} pairs; "
                                       "a pair set needs exactly two images per label")

    def __len__(self) -> int:
        return len(self.labels)

    def describe(self, j: int) -> str:
        """Human-readable name of image ``j`` (``2i`` or ``2i+1``) for error messages."""
        source = self.sources[j]
        return f"{self.name}: pair {j // 2} image {j % 2} ({source if isinstance(source, Path) else 'bytes'})"

    def align(self, aligner: FaceAligner, num_workers: int = 0, progress: bool = True) -> "PairSet":
        """Detect the face of every image (cached landmarks are reused) so that items are aligned faces;
        returns ``self``. Raises NoFaceError naming the first image without a face unless the aligner's
        ``on_miss`` is ``"crop"``."""
        if aligner.size != as_hw(self.size):
            raise VerificationSetError(f"{self.name}: aligner makes {aligner.size[0]}x{aligner.size[1]} faces, "
                                       f"the set {as_hw(self.size)[0]}x{as_hw(self.size)[1]}")
        self.alignment = SourceAlignment(aligner, self.sources, self.name, num_workers, progress)
        self._face_keys = None
        return self

    def subset(self, indices: Sequence[int], name: str | None = None) -> "PairSet":
        """The pairs ``indices`` as a new PairSet with the same preprocessing (and the same chosen faces when
        aligned: nothing is detected again)."""
        images = [2 * int(i) + side for i in indices for side in (0, 1)]
        part = PairSet([self.sources[j] for j in images], self.labels[list(indices)],
                       name or f"{self.name} ({len(indices)} pairs)", self.size, self.crop, self.crop_center)
        if self.alignment is not None:
            part.alignment = self.alignment.subset(images)
        return part

    def face_keys(self) -> list[str]:
        """Per image ``j`` (``2N``): what makes its face, as text: the source's content hash, the face size and
        either the alignment matrix used or the crop. Equal keys give equal faces (a renamed copy included);
        an edited file gets another key. Reads every source once (then remembered)."""
        if self._face_keys is None:
            if self.alignment is not None:
                content = self.alignment.keys
            else:
                of_source = {s: content_key(read_source(s)) for s in dict.fromkeys(self.sources)}
                content = [of_source[s] for s in self.sources]
            (h, w), keys = as_hw(self.size), []
            crop = f"crop {self.crop} {self.crop_center}"
            matrices = [None] * len(content) if self.alignment is None else self.alignment.matrices
            for key, matrix in zip(content, matrices):
                how = crop if matrix is None else "warp " + " ".join(f"{v:.6g}" for v in matrix.ravel())
                keys.append(f"{key} v{PREPROCESSING_VERSION} {h}x{w} {how}")
            self._face_keys = keys
        return self._face_keys

    def source_name(self, j: int) -> str:
        """A stable name of image ``j``'s source (its name in its folder's resolved path, or ``bytes`` + content
        hash) for naming caches: an edited file keeps its name, so its cache entry is found and seen to be stale.
        Each folder is resolved once (LFW's 7,701 files resolved one by one took 0.45 s of a warm verify)."""
        source = self.sources[j]
        if not isinstance(source, Path):
            return "bytes " + self.face_keys()[j].split()[0]
        parent, name = os.path.split(source)  # strings: pathlib's per-call parsing cost as much as resolving
        folder = self._real_folders.get(parent)
        if folder is None:
            folder = self._real_folders[parent] = os.path.realpath(parent or ".")
        return os.path.join(folder, name)

    def load_image(self, j: int) -> np.ndarray:
        """Image ``j`` after alignment or crop/resize: uint8 RGB ``(H, W, 3)``."""
        where = self.describe(j)
        image = open_image(self.sources[j], where)
        aligned = None if self.alignment is None else self.alignment.warp(j, image)
        return aligned if aligned is not None else prepare(image, self.size, self.crop, self.crop_center, where)

    def __getitem__(self, i: int) -> dict:
        return {"img_a": to_tensor(self.load_image(2 * i)), "img_b": to_tensor(self.load_image(2 * i + 1)),
                "label": torch.tensor(bool(self.labels[i])), "index": i}

    def self_pairs(self) -> np.ndarray:
        """bool ``(N,)``: pair pairs an image with itself (same bytes or same path)."""
        return np.asarray([self.sources[2 * i] == self.sources[2 * i + 1] for i in range(len(self))], dtype=bool)

    def problems(self) -> list[str]:
        """Reasons this set cannot measure verification; empty when it can."""
        genuine, n = int(self.labels.sum()), len(self)
        found = []
        if n == 0:
            found.append("it holds no pairs")
        elif genuine == n:
            found.append(f"all {n} pairs are marked genuine (no impostor pairs)")
        elif genuine == 0:
            found.append(f"all {n} pairs are marked impostor (no genuine pairs)")
        self_pairs = self.self_pairs()
        if self_pairs.any():
            first = np.flatnonzero(self_pairs)[:5].tolist()
            found.append(f"{int(self_pairs.sum())} of {n} pairs pair an image with itself (first pairs: {first})")
        return found

    def check(self) -> "PairSet":
        """Raise VerificationSetError listing every problem; returns ``self`` so loaders can chain it."""
        found = self.problems()
        if found:
            raise VerificationSetError(f"{self.name}: cannot measure verification: " + "; ".join(found)
                                       + ". Fix the pair list (or pass check=False to inspect it).")
        return self

    def save_bin(self, path: str | Path, fmt: str = "JPEG") -> Path:
        """Write an insightface ``.bin``: pickle of (2N encoded ``size`` x ``size`` images, N bools).

        Images that need no crop/resize keep their original bytes; the others (aligned ones included) are
        encoded as ``fmt``.
        """
        images = [encode_for_storage(s, self.size, self.crop, self.crop_center, self.describe(j), fmt)
                  if self.alignment is None else encode_image(self.load_image(j), fmt)
                  for j, s in enumerate(self.sources)]
        path = Path(path)
        with open(path, "wb") as f:
            pickle.dump((images, [bool(x) for x in self.labels]), f, protocol=4)
        return path
