"""Seeded albumentations pipelines on uint8 RGB ``(H, W, 3)`` faces (applied before tensor conversion).

albumentations 2 draws from an RNG inside ``Compose`` and ignores ``random``/numpy/torch global seeds, so
every pipeline here takes an explicit seed. DataLoader workers each get a copy of the dataset and its
transform: seeded alike they would all draw the same augmentations, and non-persistent workers would
replay them every epoch. :func:`seed_worker` (a ``worker_init_fn``) reseeds each copy from the pipeline
seed and torch's per-worker seed, which differs per worker and per epoch and is reproducible under
``lightning.seed_everything``.
"""
from __future__ import annotations

# albumentations checks for updates over the network on import unless NO_ALBUMENTATIONS_UPDATE is set:
# xcos_lightning/__init__.py sets it, before any of the package's modules can import albumentations.
import albumentations as A
import cv2
import numpy as np
from torch.utils.data import get_worker_info


class Augment:
    """Callable ``uint8 (H, W, 3) -> uint8 (H, W, 3)`` around a seeded ``A.Compose``."""

    def __init__(self, compose: A.Compose, seed: int):
        self.compose, self.seed = compose, seed
        compose.set_random_seed(seed)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.compose(image=image)["image"]

    def reseed(self, stream: int) -> None:
        """Derive an independent random stream ``stream`` (e.g. a worker's seed) from the pipeline seed."""
        self.compose.set_random_seed(int(np.random.SeedSequence([self.seed, stream]).generate_state(1)[0]))


def train_transform(seed: int = 0) -> Augment:
    """Mild face augmentation: flip, small shift/scale/rotation, colour jitter (faces stay aligned)."""
    return Augment(A.Compose([
        A.HorizontalFlip(p=0.5),
        # aligned faces tolerate only a few pixels / degrees before eyes and mouth leave their template spots
        A.Affine(scale=(0.95, 1.05), translate_percent=(-0.03, 0.03), rotate=(-5, 5),
                 border_mode=cv2.BORDER_REPLICATE, p=0.5),
        A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.5),
    ]), seed)


def eval_transform(size: int) -> Augment:
    """Deterministic resize to ``size`` x ``size`` (for models whose input differs from the data's size)."""
    return Augment(A.Compose([A.Resize(size, size, interpolation=cv2.INTER_LINEAR)]), seed=0)


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: reseed the :class:`Augment` of this worker's dataset (through wrappers such as Subset)."""
    info = get_worker_info()
    dataset = info.dataset if info is not None else None
    while dataset is not None:
        if isinstance(getattr(dataset, "transform", None), Augment):
            dataset.transform.reseed(info.seed)
        dataset = getattr(dataset, "dataset", None)
