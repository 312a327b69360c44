"""A short XCosModule run on ``--devices`` CPU processes (Lightning DDP, gloo), for the tests:

    python train_worker.py --head partial|full --devices 2 --steps 20 --out DIR [--ckpt last.ckpt] [--fail R S [--kill]]

Writes ``DIR/losses.pt`` (the rank-averaged training loss of every step) and ``DIR/head_{start,end}.pt``
(the full centre matrix and its SGD momentum, gathered, when training starts and ends). Lightning launches
the other ranks by running this script again. Both heads start from PartialFC's seeded initial centres.
"""
from __future__ import annotations

import argparse
import os
import signal
import time
from functools import partial
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from xcos_lightning.callbacks import LastCheckpoint, RankFailureMonitor
from xcos_lightning.datamodules import SyntheticFacesDataModule
from xcos_lightning.models import GridBackbone
from xcos_lightning.models.margins import ArcFace
from xcos_lightning.models.partial_fc import PartialArcFace, PartialFC
from xcos_lightning.module import XCosModule

CLASSES = 12


class Fail(Callback):
    """Raises on ``rank`` at ``step``: the injected failure; with ``kill``, that process SIGKILLs itself instead
    (a rank that dies without reporting: out of memory, a lost node)."""

    def __init__(self, rank: int, step: int, out: Path, kill: bool = False) -> None:
        self.rank, self.step, self.out, self.kill = rank, step, out, kill

    def on_train_start(self, trainer, module) -> None:
        (self.out / f"pid{trainer.global_rank}").write_text(str(os.getpid()))

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if trainer.global_rank == self.rank and trainer.global_step == self.step:
            (self.out / "failed_at").write_text(repr(time.time()))
            if self.kill:
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"injected failure on rank {self.rank} at step {self.step}")


class Record(Callback):
    def __init__(self, out: Path, head: str) -> None:
        self.out, self.head, self.losses = out, head, []

    def _head_state(self, trainer, module) -> dict:
        head = module.head
        momentum = trainer.optimizers[0].optimizers[1].state.get(head.weight, {}).get("momentum_buffer") \
            if isinstance(head, PartialFC) else None
        gather = head.gather_rows if isinstance(head, PartialFC) else (lambda t: t)
        return {"weight": gather(head.weight.detach()).clone(),
                "momentum": None if momentum is None else gather(momentum).clone(), "step": trainer.global_step}

    def on_fit_start(self, trainer, module) -> None:
        if self.head == "full":  # the same initial centres as the PartialFC runs
            with torch.no_grad():
                module.head.weight.copy_(PartialFC(module.head.weight.shape[1], CLASSES)._initial_rows(0, CLASSES))

    def on_train_start(self, trainer, module) -> None:
        self._save(trainer, "head_start.pt", self._head_state(trainer, module))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.losses.append(trainer.strategy.reduce(outputs["loss"].detach(), reduce_op="mean").item())

    def on_train_end(self, trainer, module) -> None:
        self._save(trainer, "head_end.pt", self._head_state(trainer, module))
        self._save(trainer, "losses.pt", self.losses)

    def _save(self, trainer, name: str, value) -> None:
        if trainer.is_global_zero:
            torch.save(value, self.out / name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--head", choices=["partial", "full"], required=True)
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sample-rate", type=float, default=1.0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ckpt", default=None)
    parser.add_argument("--fail", type=int, nargs=2, metavar=("RANK", "STEP"), help="raise on RANK at STEP")
    parser.add_argument("--kill", action="store_true", help="with --fail: SIGKILL that rank instead of raising")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    L.seed_everything(0, verbose=False)
    head = partial(PartialArcFace, s=16.0, m=0.3, sample_rate=args.sample_rate) if args.head == "partial" \
        else partial(ArcFace, s=16.0, m=0.3)
    # lr 0.02: at 0.05 this tiny problem is chaotic enough that float rounding differences between the two
    # heads' (equal) gradients grow to 5e-3 in the loss by step 18; at 0.02 they stay at rounding (<= 4.8e-7)
    # for 9 steps, then grow to 1.5e-3 (0.16 %) by step 20 on an AMD EPYC (test_training.py's tolerances)
    module = XCosModule(GridBackbone("tiny", grid_channels=8), num_classes=CLASSES, head=head, lr=0.02)
    data = SyntheticFacesDataModule(num_train_identities=CLASSES, images_per_identity=4, num_val_identities=6,
                                    val_pairs=20, batch_size=4)
    trainer = L.Trainer(accelerator="cpu", devices=args.devices, strategy="ddp" if args.devices > 1 else "auto",
                        max_steps=args.steps, limit_val_batches=0, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, gradient_clip_val=1.0,
                        default_root_dir=args.out, deterministic=True,
                        callbacks=[Record(args.out, args.head), RankFailureMonitor(),
                                   LastCheckpoint(dirpath=args.out / "checkpoints", every_n_train_steps=2),
                                   *([Fail(*args.fail, args.out, args.kill)] if args.fail else [])])
    trainer.fit(module, datamodule=data, ckpt_path=args.ckpt)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
