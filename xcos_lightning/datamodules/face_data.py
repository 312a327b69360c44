"""``FaceDataModule``: real face data for ``train.py``: identity folders or a ``.rec`` for training,
any number of verification pair sets (``.bin``, ``lfw:<folder>``, ``pairs:<root>:<file>``) for validation.

    data:
      class_path: xcos_lightning.datamodules.FaceDataModule
      init_args:
        train: /data/ms1m-retinaface-t1/train.rec        # or an identity-folder root
        val_sets: {lfw: /data/ms1m-retinaface-t1/lfw.bin, cfp_fp: /data/ms1m-retinaface-t1/cfp_fp.bin}
"""
from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler

from xcos_lightning.align import FaceAligner
from xcos_lightning.datamodules.face_cache import DistinctImages, FaceCache
from xcos_lightning.datamodules.image_folder import IdentityFolderDataset
from xcos_lightning.datamodules.pair_sampling import PairLoader, PairSampler, TrainPairs
from xcos_lightning.datamodules.pair_set import PairSet
from xcos_lightning.datamodules.pairs_file import load_pair_set
from xcos_lightning.datamodules.recordio_dataset import RecordIODataset
from xcos_lightning.datamodules.transforms import Augment, seed_worker, train_transform
from xcos_lightning.errors import DataFormatError

FaceDataset = IdentityFolderDataset | RecordIODataset


def open_train_set(train: str | Path, size: int = 112, crop: int | None = None, transform=None,
                   skip_bad_records: bool = False, aligner: FaceAligner | None = None,
                   num_workers: int = 0) -> FaceDataset:
    """``train``: a ``.rec`` (``.idx`` and ``property`` beside it; MS1M header record handled by the reader)
    or an identity-folder root ``root/<identity>/<image>``. Raises DataFormatError naming a missing path.
    ``skip_bad_records``: a ``.rec`` leaves out records whose header cannot be read (see RecordIODataset).
    ``aligner``: identity folders of raw photos are detected once (landmarks cached) and aligned on load."""
    path = Path(train)
    if path.suffix == ".rec":
        if aligner is not None:
            raise DataFormatError(f"{path}: align a .rec's images before packing it (xcos-convert align), "
                                  "or train on the aligned identity folders")
        return RecordIODataset(path, size=size, crop=crop, transform=transform, skip_bad_records=skip_bad_records)
    if path.is_dir():
        data = IdentityFolderDataset(path, size=size, crop=crop, transform=transform)
        return data if aligner is None else data.align(aligner, num_workers)
    raise DataFormatError(f"training data {str(train)!r} not found: expected an identity-folder root "
                          "(root/<identity>/<image>) or a .rec file (with its .idx and property beside it)")


class FaceTrainPairs(TrainPairs):
    """:class:`TrainPairs` over a face dataset; ``dataset`` is where :func:`seed_worker` finds the augmentation.

    With ``skip_bad_records`` an image that cannot be read or decoded is replaced by the next readable image of
    the same identity (each bad image warned about once per process) and items carry ``skipped_bad`` (int64,
    0-2: how many of their two images were replaced), which ``XCosModule`` sums into the logged counter
    ``train/skipped_bad_records``; without it the DataFormatError naming the file or record stops training.

    The augmentation of the dataset is reseeded for each item from its draw key (``epoch * N + anchor``): an
    item is a pure function of its key, whichever worker loads it and whether the run was resumed from a
    checkpoint in the middle of an epoch (the reseed costs about 0.5 ms per pair, a quarter of augmenting it).
    """

    def __init__(self, dataset: FaceDataset, seed: int = 0, skip_bad_records: bool = False) -> None:
        self.dataset, self.skip_bad_records = dataset, skip_bad_records
        self._bad: set[int] = set()
        self._replaced = 0
        super().__init__(dataset.labels, self._load, seed=seed)

    def __getitem__(self, key: int) -> dict[str, Tensor]:
        self._replaced = 0
        if isinstance(getattr(self.dataset, "transform", None), Augment):
            self.dataset.transform.reseed(int(key))
        item = super().__getitem__(key)
        if self.skip_bad_records:
            item["skipped_bad"] = torch.tensor(self._replaced)
        return item

    def _candidates(self, i: int):
        yield i
        own = self._members[self._slot[int(self.labels[i])]]
        start = int(np.flatnonzero(own == i)[0])
        yield from (int(own[(start + k) % len(own)]) for k in range(1, len(own)))

    def _load(self, i: int) -> Tensor:
        error = None
        for j in self._candidates(i):
            if j in self._bad:
                continue
            try:
                image = self.dataset[j][0]
                self._replaced += j != i
                return image
            except DataFormatError as err:
                if not self.skip_bad_records:
                    raise
                self._bad.add(j)
                error = err
                warnings.warn(f"skipping unreadable training image: {err}", stacklevel=2)
        raise DataFormatError(f"every image of identity {int(self.labels[i])} is unreadable, so skip_bad_records "
                              f"cannot replace image {i}; last error: {error}")


class AlternatingOrder(Sampler[int]):
    """Pair indices alternating genuine / impostor (each kind in index order; the surplus of one kind last).

    Any prefix of a val pass (``fast_dev_run``, ``limit_val_batches``) then holds both kinds, which ROC-based
    metrics need; LFW-style files list 300 genuine pairs before 300 impostor pairs. ``VerificationMetric``
    puts pairs back in index order, so a full pass is unaffected.
    """

    def __init__(self, labels: np.ndarray) -> None:
        genuine, impostor = np.flatnonzero(labels), np.flatnonzero(~np.asarray(labels, dtype=bool))
        n = min(len(genuine), len(impostor))
        self.order = np.concatenate([np.stack([genuine[:n], impostor[:n]], 1).reshape(-1),
                                     genuine[n:], impostor[n:]]).tolist()

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self):
        return iter(self.order)


class FaceDataModule(L.LightningDataModule):
    """Training pairs from real faces (50/50 genuine/impostor, DDP-sharded) and one val loader per pair set.

    Args:
        train: identity-folder root or ``.rec`` path (see :func:`open_train_set`); its identities are the
            classes of the margin head (``num_classes``, linked to the model by ``train.py``).
        val_sets: ``{name: data SPEC}``; a SPEC is ``path/set.bin``, ``lfw:<folder>`` (centre crop 120 px
            around (125, 125) of the 250x250 deep-funneled images, resized to ``size``) or
            ``pairs:<root>:<pairs file>`` or ``list:[<root>:]<file>``. Logged as ``val/<name>/acc_cos``, ``val/<name>/acc_xcos``, ...
        align: a face detector (``mtcnn``, ``dlib``, ``package.module:function``) that aligns every val set's
            images (and identity-folder training photos with ``align_train``) onto the ArcFace template, as
            the papers' data are; landmarks are detected once at setup and cached by file content
            (``XCOS_CACHE_DIR``). ``None``: each SPEC's own crop. ``align_options`` go to
            :class:`~xcos_lightning.align.FaceAligner` (``on_miss``, ``min_face_size``, ``face``, ...).
        align_train: also align the training identity folders (raw photos); default off, since training
            sets usually come aligned (``.rec``, kz_celeb25) or are aligned once by ``xcos-convert align``.
        batch_size: pairs per batch (two images each), per process under DDP.
        num_workers: DataLoader workers per loader and process.
        seed: pair draws and augmentation (reseeded per worker and epoch by ``seed_worker``).
        size: side in px of the faces handed to the model.
        crop: centre crop side in px applied to the *training* images before resizing (unaligned data);
            val sets use their SPEC's own preprocessing.
        augment: flip, small affine and colour jitter on training images.
        skip_bad_records: go on past unreadable training data instead of stopping: ``.rec`` records whose header
            cannot be read are left out at setup (one warning with their count), images that cannot be read
            or decoded are replaced by another image of the same identity and counted in the logged
            ``train/skipped_bad_records`` (see :class:`FaceTrainPairs`).

        face_cache: where the decoded (and aligned) val faces are kept between epochs and runs, uint8 and
            memory-mapped (:class:`~xcos_lightning.datamodules.face_cache.FaceCache`): ``True`` = the user's cache
            folder (``XCOS_CACHE_DIR``), a folder path, or ``False`` to decode every val face every epoch.

    Val loaders yield each *distinct* face of a pair set once (LFW: 7,701 faces for 6,000 pairs), as
    :class:`~xcos_lightning.datamodules.face_cache.DistinctImages` batches: ``index`` int64 ``(B,)`` and ``face``
    uint8 ``(B, size, size, 3)`` RGB; the faces are decoded, aligned and cached in ``prepare_data``, so
    validation reads them from the memory-mapped cache. The loader's ``dataset`` maps faces to pairs
    (``slot``, ``pair_set.labels``); its items follow :class:`AlternatingOrder` of the pairs, so the first
    batches complete both genuine and impostor pairs. Train batches are those of :class:`TrainPairs`.
    """

    def __init__(self, train: str, val_sets: dict[str, str] | None = None, batch_size: int = 64,
                 num_workers: int = 2, seed: int = 0, size: int = 112, crop: int | None = None,
                 augment: bool = True, skip_bad_records: bool = False, align: str | None = None,
                 align_options: dict | None = None, align_train: bool = False,
                 face_cache: bool | str = True) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.val_set_names = list(val_sets or {})
        self._train_set: FaceDataset | None = None
        self._val: dict[str, PairSet] = {}
        self._faces: dict[str, DistinctImages] = {}

    def aligner(self) -> FaceAligner | None:
        hp = self.hparams
        if hp.align is None:
            return None
        options = dict(hp.align_options or {})
        options.setdefault("size", (hp.size, hp.size))
        return FaceAligner(hp.align, **options)

    @property
    def train_set(self) -> FaceDataset:
        """The training images, opened on first use (the number of classes is needed before ``setup``)."""
        if self._train_set is None:
            hp = self.hparams
            self._train_set = open_train_set(hp.train, hp.size, hp.crop,
                                             train_transform(hp.seed) if hp.augment else None,
                                             skip_bad_records=hp.skip_bad_records,
                                             aligner=self.aligner() if hp.align_train else None,
                                             num_workers=hp.num_workers)
        return self._train_set

    @property
    def num_classes(self) -> int:
        return int(self.train_set.num_classes)

    def val_pair_set(self, name: str) -> PairSet:
        """The pair set ``name`` of ``val_sets``, loaded (and checked) on first use."""
        if name not in self._val:
            self._val[name] = load_pair_set(self.hparams.val_sets[name], size=self.hparams.size,
                                            aligner=self.aligner(), num_workers=self.hparams.num_workers)
        return self._val[name]

    def val_faces(self, name: str) -> DistinctImages:
        """The distinct faces of val set ``name``, read from the face cache where it holds them."""
        if name not in self._faces:
            pair_set, where = self.val_pair_set(name), self.hparams.face_cache
            cache = None if where is False else FaceCache(None if where is True else where)
            self._faces[name] = DistinctImages(pair_set, cache, AlternatingOrder(pair_set.labels))
        return self._faces[name]

    def prepare_data(self) -> None:
        # Once per node (Lightning calls this on local rank 0 only): decode, align and cache every val face,
        # so that each rank's setup finds them cached and validation never decodes.
        for name in self.val_set_names:
            self.val_faces(name).fill(self.hparams.num_workers)

    def setup(self, stage: str) -> None:
        # Open everything now: a missing path or a broken pair set fails before the first training step.
        if stage == "fit":
            _ = self.train_set.labels  # reads every label once; a .rec checks them against its property file
        for name in self.val_set_names:
            self.val_faces(name)

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        pairs = FaceTrainPairs(self.train_set, seed=hp.seed, skip_bad_records=hp.skip_bad_records)
        sampler = PairSampler(pairs, seed=hp.seed)
        if sampler.num_samples < hp.batch_size:  # drop_last would leave an empty epoch
            raise DataFormatError(f"{hp.train}: {sampler.num_samples} training images per process, fewer than "
                                  f"one batch of {hp.batch_size} pairs; lower batch_size")
        return PairLoader(pairs, batch_size=hp.batch_size, sampler=sampler, num_workers=hp.num_workers,
                          worker_init_fn=seed_worker, persistent_workers=hp.num_workers > 0,
                          pin_memory=torch.cuda.is_available())

    def val_dataloader(self) -> list[DataLoader]:
        # 2 x batch_size faces per batch: the images of batch_size pairs, as in training
        return [DataLoader(self.val_faces(name), batch_size=2 * self.hparams.batch_size, shuffle=False,
                           num_workers=self.hparams.num_workers, pin_memory=torch.cuda.is_available())
                for name in self.val_set_names]

    test_dataloader = val_dataloader
