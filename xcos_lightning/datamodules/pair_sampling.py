"""Training pairs: every image is an anchor once per epoch; its partner is drawn 50/50 genuine/impostor.

Partners are drawn from a generator seeded by (seed, epoch, anchor), so a pair depends neither on the
rank that draws it nor on the worker that loads it: DDP shards and resumed runs see the same pairs.
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler


class TrainPairs(Dataset):
    """Pair dataset over images with identity ``labels (N,)`` and a loader ``load(i) -> (3, H, W) [0, 1]``.

    Indexed by *draw keys* ``epoch * N + anchor`` (from ``PairSampler``); returns ``img_a``, ``img_b``,
    ``label_a``, ``label_b`` (identity ids) and ``genuine`` (bool).
    Genuine: another image of the anchor's identity. Impostor: a uniformly random other identity, then a
    random image of it (reference-notes section 1). Identities with a single image only get impostors.
    """

    def __init__(self, labels: np.ndarray, load: Callable[[int], Tensor], seed: int = 0,
                 genuine_fraction: float = 0.5) -> None:
        self.labels = np.asarray(labels, dtype=np.int64)
        if self.labels.ndim != 1 or len(self.labels) == 0:
            raise ValueError("TrainPairs needs a non-empty 1-d label array")
        self.load, self.seed, self.genuine_fraction = load, seed, genuine_fraction
        self.identities = np.unique(self.labels)
        if len(self.identities) < 2:
            raise ValueError("impostor pairs need at least 2 identities")
        order = np.argsort(self.labels, kind="stable")
        starts = np.searchsorted(self.labels[order], self.identities)
        self._members = np.split(order, starts[1:])
        self._slot = {int(c): k for k, c in enumerate(self.identities)}

    def __len__(self) -> int:
        return len(self.labels)

    def partner(self, key: int) -> tuple[int, int, bool]:
        """``(anchor, partner, genuine)`` for a draw key; deterministic."""
        epoch, anchor = divmod(int(key), len(self.labels))
        rng = np.random.default_rng((self.seed, epoch, anchor))
        own = self._members[self._slot[int(self.labels[anchor])]]
        if len(own) > 1 and rng.random() < self.genuine_fraction:
            other = own[rng.integers(len(own) - 1)]
            return anchor, int(other if other != anchor else own[-1]), True
        k = rng.integers(len(self.identities) - 1)
        k = k if k < self._slot[int(self.labels[anchor])] else k + 1
        members = self._members[k]
        return anchor, int(members[rng.integers(len(members))]), False

    def __getitem__(self, key: int) -> dict[str, Tensor]:
        a, b, genuine = self.partner(key)
        return {"img_a": self.load(a), "img_b": self.load(b), "label_a": torch.tensor(self.labels[a]),
                "label_b": torch.tensor(self.labels[b]), "genuine": torch.tensor(genuine)}


class PairSampler(DistributedSampler):
    """Shuffled anchors, sharded across ranks, yielding draw keys ``epoch * N + anchor``.

    Being a ``DistributedSampler``, Lightning keeps it (rather than wrapping it) and calls
    ``set_epoch`` every epoch; a single process is simply replica 0 of 1.
    """

    def __init__(self, dataset: TrainPairs, seed: int = 0, shuffle: bool = True) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        super().__init__(dataset, num_replicas=dist.get_world_size() if distributed else 1,
                         rank=dist.get_rank() if distributed else 0, shuffle=shuffle, seed=seed, drop_last=False)

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        return (self.epoch * n + i for i in super().__iter__())
