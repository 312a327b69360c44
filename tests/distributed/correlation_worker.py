"""A one-step XCosModule run with CorrelationAttention on ``--devices`` CPU processes (Lightning DDP, gloo):

    python correlation_worker.py --devices 2 --fit-pairs 21 --out DIR

Writes ``DIR/weights_rank<r>.pt``: the attention weights each rank trains its first step with. Lightning launches
the other ranks by running this script again.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from xcos_lightning.datamodules import SyntheticFacesDataModule
from xcos_lightning.models import CorrelationAttention, GridBackbone
from xcos_lightning.module import XCosModule


class Record(Callback):
    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if batch_idx == 0:
            torch.save(module.model.attention.weights.clone(), self.out / f"weights_rank{trainer.global_rank}.pt")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--fit-pairs", type=int, default=21)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    L.seed_everything(0, verbose=False)
    module = XCosModule(GridBackbone("tiny", grid_channels=8), num_classes=12,
                        attention=CorrelationAttention(fit_pairs=args.fit_pairs))
    data = SyntheticFacesDataModule(num_train_identities=12, images_per_identity=4, num_val_identities=6,
                                    val_pairs=20, batch_size=4)
    trainer = L.Trainer(accelerator="cpu", devices=args.devices, strategy="ddp" if args.devices > 1 else "auto",
                        max_steps=1, limit_val_batches=0, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
                        default_root_dir=args.out, callbacks=[Record(args.out)])
    trainer.fit(module, datamodule=data)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
