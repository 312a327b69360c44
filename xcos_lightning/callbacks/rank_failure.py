"""``RankFailureMonitor``: when one DDP rank raises, every rank stops within seconds naming it and its error.

Without it a rank that raises leaves the others inside their next collective: over gloo they fail at once
with "Connection closed by peer" (which rank and why is only in the failed rank's own log, perhaps on
another node); over NCCL they wait for the collective timeout (30 minutes by default). Here the failing
rank writes ``rank<N>.txt`` (its rank, global step and error) into a folder every rank can read (the run
folder: shared on a cluster), and a watchdog thread on every rank polls that folder: on finding another
rank's report it prints it and, unless its own training has ended by then, ends the process after
``grace_seconds`` (a rank blocked in a collective cannot be interrupted otherwise). A rank killed without
a chance to report (SIGKILL, out of memory) is caught by the collectives themselves: gloo at once, NCCL
after ``DDPStrategy(timeout=...)`` (see ``docs/multinode.md``).
"""
from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class RankFailureMonitor(Callback):
    """Reports a rank's exception to the other ranks and stops them.

    Args:
        dirpath: folder of the reports (default ``<trainer.default_root_dir>/rank_failures``); it must be
            visible to every rank, and is emptied when training starts.
        poll_seconds: how often each rank looks for reports.
        grace_seconds: how long a rank that found another's report lets its own error handling run (its
            collective fails first over gloo) before it ends the process with exit code 1.
    """

    def __init__(self, dirpath: str | None = None, poll_seconds: float = 1.0, grace_seconds: float = 10.0) -> None:
        self.dirpath, self.poll_seconds, self.grace_seconds = dirpath, poll_seconds, grace_seconds
        self._folder: Path | None = None
        self._stop = threading.Event()
        self._rank = 0

    def setup(self, trainer, pl_module, stage: str) -> None:
        if trainer.world_size < 2:
            return
        self._rank = trainer.global_rank
        self._folder = Path(self.dirpath or Path(trainer.default_root_dir) / "rank_failures")
        if trainer.is_global_zero:
            self._folder.mkdir(parents=True, exist_ok=True)
            for old in self._folder.glob("rank*.txt"):  # reports of an earlier run
                old.unlink()
        trainer.strategy.barrier("RankFailureMonitor.setup")
        self._stop.clear()
        threading.Thread(target=self._watch, name="rank-failure-watchdog", daemon=True).start()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._stop.set()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self._folder is None:
            return
        others = self._reports()
        if others:  # this rank fails because another one did: say so, do not report it as a cause
            print(f"rank {self._rank} stopped because {others[0]}", file=sys.stderr, flush=True)
            return
        message = f"rank {self._rank} failed at global step {trainer.global_step}: " \
                  f"{type(exception).__name__}: {exception}".replace("\n", " ")
        partial = self._folder / f".rank{self._rank}.tmp"  # renamed whole: a reader never sees half a report
        partial.write_text(message)
        os.replace(partial, self._folder / f"rank{self._rank}.txt")

    def _reports(self) -> list[str]:
        if self._folder is None or not self._folder.is_dir():
            return []
        found = sorted(p for p in self._folder.glob("rank*.txt") if p.name != f"rank{self._rank}.txt")
        return [p.read_text() for p in found]

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            reports = self._reports()
            if not reports:
                continue
            print(f"rank {self._rank}: {reports[0]}; stopping", file=sys.stderr, flush=True)
            if not self._stop.wait(self.grace_seconds):
                os._exit(1)  # still blocked (in a collective): nothing else ends this process
            return
