"""Callback for the crash tests, imported by train.py subprocesses: stalls the run at a known step."""
from __future__ import annotations

import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class StallAt(Callback):
    """After optimizer step ``step``, touch ``marker`` and sleep until killed (the test sends SIGKILL)."""

    def __init__(self, step: int, marker: str) -> None:
        self.step, self.marker = step, Path(marker)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            self.marker.touch()
            time.sleep(600)
