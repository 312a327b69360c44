"""``LastCheckpoint``: ``last.ckpt`` at every epoch end *and* every N training steps, to resume from after a crash.

Lightning's ``ModelCheckpoint`` takes either ``every_n_train_steps`` or ``every_n_epochs``, not both; a
second ``save_last`` callback in the same folder would write ``last-v1.ckpt`` instead of replacing
``last.ckpt``. A run killed mid-epoch loses at most ``every_n_train_steps`` steps, and resumes at the
next batch of the same epoch (``PairLoader`` stores the position). Saves go through the trainer's
CheckpointIO (``AtomicCheckpointIO`` in the configs), so a kill during a save leaves the previous file.
"""
from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint


class LastCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint(save_top_k=0, save_last=True)`` that saves ``last.ckpt`` after every validation and
    epoch end, and every ``every_n_train_steps`` optimizer steps (0: never mid-epoch). Other arguments as
    ``ModelCheckpoint`` (``dirpath``, ``filename`` is unused)."""

    def __init__(self, dirpath: str | None = None, every_n_train_steps: int = 0, **kwargs: Any) -> None:
        if every_n_train_steps < 0:
            raise ValueError(f"every_n_train_steps={every_n_train_steps}: use 0 (epoch ends only) or a step count")
        super().__init__(dirpath=dirpath, save_top_k=0, save_last=True, **kwargs)
        self.save_every_n_steps = every_n_train_steps

    def _save_last(self, trainer) -> None:
        # ModelCheckpoint writes last.ckpt only when it saved a top-k checkpoint at the same step; here there
        # is none, so last.ckpt is written directly (skipped in sanity checks, fast_dev_run, twice per step).
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.save_every_n_steps and trainer.global_step % self.save_every_n_steps == 0:
            self._save_last(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        # ModelCheckpoint.on_train_end writes last.ckpt if none was written, even under fast_dev_run (which
        # its other saves skip): a plumbing check beside a running job left a stray last-v1.ckpt in its folder.
        if not trainer.fast_dev_run:
            super().on_train_end(trainer, pl_module)
