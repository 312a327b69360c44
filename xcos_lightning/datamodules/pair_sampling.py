"""Training pairs: every image is an anchor once per epoch; its partner is drawn 50/50 genuine/impostor.

Partners are drawn from a generator seeded by (seed, epoch, anchor), so a pair depends neither on the
rank that draws it nor on the worker that loads it: DDP shards and resumed runs see the same pairs.
:class:`PairLoader` makes the position inside an epoch part of every checkpoint, so a run resumed from a
mid-epoch checkpoint continues with the next batch of the same epoch (granularity: one batch).
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler


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
    ``set_epoch`` every epoch; a single process is simply replica 0 of 1. ``start``: the next pass begins
    at this position of the epoch's shard (then resets to 0); set by :class:`PairLoader` on resume.
    """

    def __init__(self, dataset: TrainPairs, seed: int = 0, shuffle: bool = True) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        super().__init__(dataset, num_replicas=dist.get_world_size() if distributed else 1,
                         rank=dist.get_rank() if distributed else 0, shuffle=shuffle, seed=seed, drop_last=False)
        self.start = 0

    def __iter__(self) -> Iterator[int]:
        n, epoch, start = len(self.dataset), self.epoch, self.start
        self.start = 0
        return (epoch * n + i for i in list(super().__iter__())[start:])


class PairLoader(DataLoader):
    """DataLoader of whole batches (``drop_last``) over a :class:`PairSampler` whose position is checkpointed.

    Lightning saves ``state_dict()`` (epoch, batches handed out in this pass) with every checkpoint and
    calls ``load_state_dict`` on resume before the first batch. When the resumed epoch is the saved one
    (a mid-epoch checkpoint) the pass starts at the next batch of the same permutation, without loading
    the skipped images; otherwise (saved at an epoch end) the new epoch starts from its beginning. A plain
    DataLoader would restart the epoch: the first batches twice, the last ones never. Items are those of
    :class:`TrainPairs`.
    """

    def __init__(self, dataset: TrainPairs, batch_size: int, sampler: PairSampler, **kwargs: Any) -> None:
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, drop_last=True, **kwargs)
        self.batches_done = 0
        self._resume: dict[str, int] | None = None

    def __iter__(self):
        # A generator: this runs at the first batch, after Lightning has set the epoch of the sampler.
        state, self._resume = self._resume, None
        skip = state["batches_done"] if state and state["epoch"] == self.sampler.epoch else 0
        self.sampler.start, self.batches_done = skip * self.batch_size, skip
        for batch in super().__iter__():
            self.batches_done += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches_done": self.batches_done, "batch_size": self.batch_size,
                "num_samples": self.sampler.num_samples}

    def load_state_dict(self, state: dict[str, int]) -> None:
        saved = (state["batch_size"], state["num_samples"])
        # Mid-epoch = fewer batches done than the saved run's epoch had (this run's may have more or fewer).
        if saved != (self.batch_size, self.sampler.num_samples) and state["batches_done"] < saved[1] // saved[0]:
            raise ValueError(f"the checkpoint stopped mid-epoch with batch_size={saved[0]} and {saved[1]} training "
                             f"images per process, this run has batch_size={self.batch_size} and "
                             f"{self.sampler.num_samples}: resume with the same data, batch size and devices, or "
                             "from an end-of-epoch checkpoint")
        self._resume = dict(state)
