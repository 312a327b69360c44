"""Every training config gets the reliability settings: atomic checkpoint IO, one last.ckpt writer saving every
N steps and each epoch end, and the W&B logger that never stops training."""
from __future__ import annotations

import pytest
from helpers.configs import EXPERIMENTS, print_configs


@pytest.fixture(scope="module")
def resolved() -> dict[str, dict]:
    """The configs as train.py resolves them (experiments compose configs/base/ files)."""
    return print_configs(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_config_is_crash_safe(name, resolved):
    trainer = resolved[name]["trainer"]
    assert [p["class_path"] for p in trainer["plugins"]] == ["xcos_lightning.checkpoint_io.AtomicCheckpointIO"]
    assert trainer["logger"]["class_path"] == "xcos_lightning.wandb_logger.ResilientWandbLogger"
    callbacks = trainer["callbacks"]
    last = [c for c in callbacks if c["class_path"] == "xcos_lightning.callbacks.LastCheckpoint"]
    assert len(last) == 1 and last[0]["init_args"]["every_n_train_steps"] > 0
    # A second save_last writer in the same folder would write last-v1.ckpt instead of replacing last.ckpt.
    assert not [c for c in callbacks if c["class_path"].endswith("ModelCheckpoint")
                and c.get("init_args", {}).get("save_last")]
