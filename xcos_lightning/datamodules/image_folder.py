"""Identity-folder training/test sets: ``root/<identity>/<image>`` (LFW, kz_celeb25, ORL, CASIA-style)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from xcos_lightning.align import FaceAligner
from xcos_lightning.datamodules.aligned import SourceAlignment
from xcos_lightning.datamodules.image_io import open_image, prepare, to_tensor
from xcos_lightning.errors import DataFormatError

Transform = Callable[[np.ndarray], np.ndarray]


def _is_hidden(path: Path) -> bool:
    # .DS_Store, ._foo.jpg, .ipynb_checkpoints: OS/tool metadata, never faces
    return path.name.startswith(".")


class IdentityFolderDataset(Dataset):
    """Faces from ``root/<identity>/*``; identities sorted by folder name get labels ``0..K-1``.

    Files directly under ``root`` (a ``pairs.txt``, a ``.rec``) are ignored; every non-hidden file inside
    an identity folder must have an image extension PIL reads (any size; grayscale becomes 3 channels).
    ``crop`` is the side in px of a centre crop taken before resizing to ``size``. ``transform`` maps a
    uint8 RGB ``(size, size, 3)`` array to another one (training augmentation).
    Items: ``(image float32 (3, size, size) in [0, 1] RGB, label int)``.
    """

    def __init__(self, root: str | Path, size: int = 112, crop: int | None = None,
                 transform: Transform | None = None):
        self.root, self.size, self.crop, self.transform = Path(root), size, crop, transform
        if not self.root.is_dir():
            raise DataFormatError(f"{self.root}: identity-folder root not found")
        folders = sorted(p for p in self.root.iterdir() if p.is_dir() and not _is_hidden(p))
        if not folders:
            raise DataFormatError(f"{self.root}: no identity folders (expected root/<identity>/<image>)")
        extensions = {ext.lower() for ext in Image.registered_extensions()}
        paths, labels, empty, foreign = [], [], [], []
        for label, folder in enumerate(folders):
            files = sorted(p for p in folder.iterdir() if p.is_file() and not _is_hidden(p))
            foreign += [p for p in files if p.suffix.lower() not in extensions]
            empty += [] if files else [folder]
            paths += files
            labels += [label] * len(files)
        if empty:
            raise DataFormatError(f"{self.root}: {len(empty)} identity folders hold no images, e.g. "
                                  f"{[str(p) for p in empty[:5]]}; remove them so labels stay contiguous")
        if foreign:
            raise DataFormatError(f"{self.root}: {len(foreign)} files in identity folders are not images, e.g. "
                                  f"{[str(p) for p in foreign[:5]]}; move them out of the identity folders")
        self.paths: list[Path] = paths
        self.labels = np.asarray(labels, dtype=np.int64)
        self.class_names = [p.name for p in folders]
        self.num_classes = len(folders)
        self.alignment: SourceAlignment | None = None

    def align(self, aligner: FaceAligner, num_workers: int = 0, progress: bool = True) -> "IdentityFolderDataset":
        """Detect every photo's face once (cached landmarks reused) so that items are aligned faces; returns
        ``self``. Photos without a face: NoFaceError, with ``on_miss="crop"`` the centre crop, with ``"skip"`` left
        out (labels and classes unchanged; an identity left without any photo is an error)."""
        if aligner.size != (self.size, self.size):
            raise DataFormatError(f"{self.root}: aligner makes {aligner.size[0]}x{aligner.size[1]} faces, "
                                  f"the dataset {self.size}x{self.size}")
        alignment = SourceAlignment(aligner, self.paths, str(self.root), num_workers, progress,
                                    drops_misses=aligner.on_miss == "skip")
        if aligner.on_miss == "skip" and alignment.misses:
            keep = [i for i, face in enumerate(alignment.faces) if face is not None]
            lost = sorted(set(range(self.num_classes)) - set(self.labels[keep].tolist()))
            if lost:
                raise DataFormatError(f"{self.root}: no face found in any photo of {len(lost)} identities, e.g. "
                                      f"{[self.class_names[c] for c in lost[:5]]}; remove them or use on_miss=crop")
            self.paths, self.labels = [self.paths[i] for i in keep], self.labels[keep]
            alignment = alignment.subset(keep)
        self.alignment = alignment
        return self

    def __len__(self) -> int:
        return len(self.paths)

    def load_image(self, i: int) -> np.ndarray:
        """Image ``i`` after alignment or crop/resize: uint8 RGB ``(size, size, 3)``."""
        path = self.paths[i]
        image = open_image(path, str(path))
        aligned = None if self.alignment is None else self.alignment.warp(i, image)
        return aligned if aligned is not None else prepare(image, self.size, self.crop, where=str(path))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = self.load_image(i)
        return to_tensor(self.transform(image) if self.transform else image), int(self.labels[i])
