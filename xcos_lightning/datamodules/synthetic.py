"""The embedded default data: procedurally generated identities, rendered on the fly (no download)."""
from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from xcos_lightning.datamodules.pair_sampling import PairSampler, TrainPairs
from xcos_lightning.datamodules.synthetic_faces import SyntheticFaces


class SyntheticPairSet(Dataset):
    """Verification pairs of held-out synthetic identities: ``img_a``, ``img_b`` ``(3, H, W)`` in [0, 1],
    ``label`` (True = genuine), ``index``, and the occluder masks ``mask_a``, ``mask_b`` ``(H, W)``."""

    def __init__(self, faces: SyntheticFaces, pairs: list[tuple[int, int, int, int, bool]]) -> None:
        self.faces, self.pairs = faces, pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        id_a, im_a, id_b, im_b, genuine = self.pairs[i]
        img_a, mask_a = self.faces.render(id_a, im_a)
        img_b, mask_b = self.faces.render(id_b, im_b)
        return {"img_a": img_a, "img_b": img_b, "mask_a": mask_a, "mask_b": mask_b,
                "label": torch.tensor(genuine), "index": torch.tensor(i)}


class SyntheticFacesDataModule(L.LightningDataModule):
    """Training identities ``[0, num_train_identities)``; verification on the next
    ``num_val_identities`` identities, never seen in training.

    Args:
        num_train_identities: classes of the identification loss.
        images_per_identity: training images per identity (anchors per epoch = product of the two).
        num_val_identities, val_pairs: held-out verification set ("synth"), 50/50 genuine/impostor.
        occluder_prob: probability of an occluder on each image (masks kept for explanation tests).
        jitter: scale of pose/lighting/expression variation. seed: data seed (identities and pairs).
        batch_size: pairs per batch (each pair feeds two images). num_workers: DataLoader workers.
    """

    def __init__(self, num_train_identities: int = 200, images_per_identity: int = 30, num_val_identities: int = 100,
                 val_pairs: int = 1000, occluder_prob: float = 0.0, jitter: float = 1.0, seed: int = 0,
                 batch_size: int = 32, num_workers: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        total = num_train_identities + num_val_identities
        self.faces = SyntheticFaces(total, seed=seed, occluder_prob=occluder_prob, jitter=jitter)
        self.val_set_names = ["synth"]

    @property
    def num_classes(self) -> int:
        return self.hparams.num_train_identities

    def _load_train(self, i: int) -> Tensor:
        identity, image = divmod(i, self.hparams.images_per_identity)
        return self.faces.render(identity, image)[0]

    def train_pairs(self) -> TrainPairs:
        hp = self.hparams
        labels = np.repeat(np.arange(hp.num_train_identities), hp.images_per_identity)
        return TrainPairs(labels, self._load_train, seed=hp.seed)

    def val_pair_set(self) -> SyntheticPairSet:
        hp = self.hparams
        held_out = range(hp.num_train_identities, hp.num_train_identities + hp.num_val_identities)
        pairs = self.faces.verification_pairs(held_out, hp.val_pairs, seed=hp.seed + 1)
        return SyntheticPairSet(self.faces, pairs)

    def train_dataloader(self) -> DataLoader:
        pairs = self.train_pairs()
        return DataLoader(pairs, batch_size=self.hparams.batch_size, sampler=PairSampler(pairs, seed=self.hparams.seed),
                          num_workers=self.hparams.num_workers, drop_last=True,
                          persistent_workers=self.hparams.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_pair_set(), batch_size=2 * self.hparams.batch_size,
                          num_workers=self.hparams.num_workers)

    test_dataloader = val_dataloader
