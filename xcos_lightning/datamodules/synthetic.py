"""The embedded default data: procedurally generated identities, rendered on the fly (no download)."""
from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from xcos_lightning.datamodules.pair_sampling import PairLoader, PairSampler, TrainPairs
from xcos_lightning.datamodules.synthetic_faces import SyntheticFaces


def render_all(faces: SyntheticFaces, identities: Tensor, images: Tensor, chunk: int = 256) -> tuple[Tensor, Tensor]:
    """Render once, in vectorised chunks, into compact caches: uint8 ``(N, 3, H, W)`` and bool masks ``(N, H, W)``.

    Rendering is far cheaper in batches than per item, and the caches of the demo's 2,000 training faces
    (200 identities x 10 images) take 75 MB (uint8 images) and 25 MB (masks), so epochs after the first cost
    no rendering at all.
    """
    imgs, masks = [], []
    for start in range(0, len(identities), chunk):
        img, mask = faces.render_batch(identities[start:start + chunk], images[start:start + chunk])
        imgs.append((img * 255).round().to(torch.uint8))
        masks.append(mask)
    return torch.cat(imgs), torch.cat(masks)


class SyntheticPairSet(Dataset):
    """Verification pairs of held-out synthetic identities: ``img_a``, ``img_b`` ``(3, H, W)`` in [0, 1],
    ``label`` (True = genuine), ``index``, and the occluder masks ``mask_a``, ``mask_b`` ``(H, W)``."""

    def __init__(self, faces: SyntheticFaces, pairs: list[tuple[int, int, int, int, bool]]) -> None:
        self.pairs = pairs
        ids = torch.tensor([[p[0], p[2]] for p in pairs]).flatten()
        imgs = torch.tensor([[p[1], p[3]] for p in pairs]).flatten()
        self.images, self.masks = render_all(faces, ids, imgs)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"img_a": self.images[2 * i].float() / 255, "img_b": self.images[2 * i + 1].float() / 255,
                "mask_a": self.masks[2 * i], "mask_b": self.masks[2 * i + 1],
                "label": torch.tensor(self.pairs[i][4]), "index": torch.tensor(i)}


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
        self._train_images: Tensor | None = None
        self._val: SyntheticPairSet | None = None

    @property
    def num_classes(self) -> int:
        return self.hparams.num_train_identities

    def _load_train(self, i: int) -> Tensor:
        return self._train_images[i].float() / 255

    def train_pairs(self) -> TrainPairs:
        hp = self.hparams
        labels = np.repeat(np.arange(hp.num_train_identities), hp.images_per_identity)
        if self._train_images is None:
            images = torch.arange(hp.images_per_identity).repeat(hp.num_train_identities)
            self._train_images = render_all(self.faces, torch.from_numpy(labels), images)[0]
        return TrainPairs(labels, self._load_train, seed=hp.seed)

    def val_pair_set(self) -> SyntheticPairSet:
        if self._val is None:
            hp = self.hparams
            held_out = range(hp.num_train_identities, hp.num_train_identities + hp.num_val_identities)
            self._val = SyntheticPairSet(self.faces, self.faces.verification_pairs(held_out, hp.val_pairs, seed=hp.seed + 1))
        return self._val

    def train_dataloader(self) -> DataLoader:
        pairs = self.train_pairs()
        return PairLoader(pairs, batch_size=self.hparams.batch_size, sampler=PairSampler(pairs, seed=self.hparams.seed),
                          num_workers=self.hparams.num_workers, persistent_workers=self.hparams.num_workers > 0,
                          pin_memory=torch.cuda.is_available())

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_pair_set(), batch_size=2 * self.hparams.batch_size,
                          num_workers=self.hparams.num_workers, pin_memory=torch.cuda.is_available())

    test_dataloader = val_dataloader
