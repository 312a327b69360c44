"""NaN/inf losses and gradients: the run stops with the last good checkpoint intact, or skips and counts."""
from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import Logger

from xcos_lightning.checkpoint_io import AtomicCheckpointIO
from xcos_lightning.datamodules import SyntheticFacesDataModule
from xcos_lightning.errors import DataFormatError
from xcos_lightning.models import GridBackbone
from xcos_lightning.module import XCosModule


class Poison(Callback):
    """Injects a fault into chosen steps: NaN images (loss NaN) or a NaN gradient hook on one parameter."""

    def __init__(self, steps: set[int], kind: str) -> None:
        self.steps, self.kind, self._hook = steps, kind, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if trainer.global_step not in self.steps:
            return
        if self.kind == "loss":
            batch["img_a"].fill_(float("nan"))
        else:  # the loss stays finite; only this parameter's gradient turns NaN
            param = next(pl_module.model.attention.parameters())
            self._hook = param.register_hook(lambda grad: torch.full_like(grad, float("nan")))


class MemoryLogger(Logger):
    """What a logger (W&B) receives: ``{step: metrics}``."""

    name, version = "memory", 0

    def __init__(self) -> None:
        super().__init__()
        self.steps: dict[int, dict[str, float]] = {}

    def log_metrics(self, metrics, step=None) -> None:
        self.steps.setdefault(step, {}).update(metrics)

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass


def _fit(tmp_path, nonfinite: str, poison: Poison, max_steps: int = 6, extra=(), logger=False):
    data = SyntheticFacesDataModule(num_train_identities=6, images_per_identity=4, num_val_identities=6,
                                    val_pairs=20, batch_size=4)
    module = XCosModule(GridBackbone("tiny", grid_channels=8), num_classes=6, nonfinite=nonfinite)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=0, save_last=True, every_n_train_steps=2)
    trainer = L.Trainer(accelerator="cpu", max_steps=max_steps, limit_val_batches=0, logger=logger,
                        log_every_n_steps=1, enable_progress_bar=False, default_root_dir=tmp_path,
                        num_sanity_val_steps=0,
                        callbacks=[poison, checkpoint, *extra], plugins=[AtomicCheckpointIO()])
    return trainer, module, data


def _finite(state: dict) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.mark.parametrize("kind, match", [("loss", "non-finite training loss"), ("grad", "non-finite gradient")])
def test_raise_stops_with_the_last_good_checkpoint_intact(tmp_path, kind, match):
    trainer, module, data = _fit(tmp_path, "raise", Poison({5}, kind))
    with pytest.raises(FloatingPointError, match=match) as info:
        trainer.fit(module, datamodule=data)
    assert "global step 5" in str(info.value) and "nonfinite=skip" in str(info.value)
    last = torch.load(tmp_path / "ckpt/last.ckpt", weights_only=True)
    assert last["global_step"] == 4 and _finite(last["state_dict"])  # written at step 4, before the fault
    assert _finite(module.state_dict())  # the faulty step changed nothing


@pytest.mark.parametrize("kind", ["loss", "grad"])
def test_skip_leaves_the_weights_untouched_counts_and_goes_on(tmp_path, kind):
    logger, snapshots = MemoryLogger(), {}

    class Snapshot(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            snapshots[trainer.global_step] = {k: v.clone() for k, v in pl_module.state_dict().items()}

    trainer, module, data = _fit(tmp_path, "skip", Poison({2, 4}, kind), extra=[Snapshot()], logger=logger)
    trainer.fit(module, datamodule=data)
    assert trainer.global_step == 6 and module.skipped_nonfinite == 2
    assert [logger.steps[step]["train/skipped_nonfinite"] for step in range(6)] == [0, 0, 1, 1, 2, 2]
    for step in (2, 4):  # the poisoned step left every weight and BatchNorm statistic as it was
        before, after = snapshots[step], snapshots[step + 1]
        assert all(torch.equal(before[k], after[k]) for k in before) == (kind == "loss"), step
        weights = [k for k in before if "running" not in k and "num_batches" not in k]
        assert all(torch.equal(before[k], after[k]) for k in weights), step
    assert not all(torch.equal(snapshots[1][k], snapshots[2][k]) for k in snapshots[1])  # other steps trained
    last = torch.load(tmp_path / "ckpt/last.ckpt", weights_only=True)
    assert last["skipped_nonfinite"] == 2 and _finite(last["state_dict"])
    assert all(torch.isfinite(t).all() for opt in last["optimizer_states"][0]["optimizers"]
               for s in opt["state"].values() for t in s.values() if isinstance(t, torch.Tensor))


def test_labels_outside_num_classes_and_wrong_channels_are_named(tmp_path):
    data = SyntheticFacesDataModule(num_train_identities=6, images_per_identity=4, num_val_identities=6,
                                    val_pairs=20, batch_size=4)
    module = XCosModule(GridBackbone("tiny", grid_channels=8), num_classes=4)  # the data has 6 identities
    trainer = L.Trainer(accelerator="cpu", max_steps=8, limit_val_batches=0, logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, default_root_dir=tmp_path)
    with pytest.raises(DataFormatError, match=r"training label [45] is outside \[0, num_classes=4\)"):
        trainer.fit(module, datamodule=data)
    module = XCosModule(GridBackbone("tiny", grid_channels=8), num_classes=6)
    for bad in (torch.rand(2, 1, 112, 112), torch.rand(2, 4, 112, 112), torch.zeros(2, 3, 112, 112, dtype=torch.uint8)):
        with pytest.raises(DataFormatError, match=r"has shape \(2, ., 112, 112\).*float RGB \(B, 3, H, W\)"):
            module.validation_step({"img_a": torch.rand(2, 3, 112, 112), "img_b": bad, "label": torch.ones(2)}, 0)
