"""``train.py``: LightningCLI over ``XCosModule`` and any LightningDataModule (fit / validate / test)."""
from __future__ import annotations

import os
import sys

# Offline unless the user asks otherwise: no login, no network wait; `wandb sync` uploads later.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from lightning.pytorch import LightningDataModule  # noqa: E402
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback  # noqa: E402
from lightning.pytorch.loggers import Logger  # noqa: E402

from xcos_lightning.module import XCosModule  # noqa: E402


class LogConfigCallback(SaveConfigCallback):
    """Saves ``config.yaml`` beside the run and also sends the resolved config to the logger (W&B)."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        if isinstance(trainer.logger, Logger):
            config = self.parser.dump(self.config, skip_none=False, format="yaml")
            trainer.logger.log_hyperparams({"config": _yaml_to_dict(config)})


def _yaml_to_dict(text: str) -> dict:
    import yaml

    return yaml.safe_load(text)


class XCosCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # The number of training identities is a property of the data, never typed twice.
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")


def main(args: list[str] | None = None) -> XCosCLI:
    failed = True
    try:
        cli = XCosCLI(
            XCosModule,
            LightningDataModule,
            subclass_mode_data=True,
            save_config_callback=LogConfigCallback,
            save_config_kwargs={"overwrite": True},
            args=args,
            auto_configure_optimizers=False,
        )
        failed = False
        return cli
    finally:
        _finish_wandb(exit_code=int(failed))


def _finish_wandb(exit_code: int) -> None:
    """Close the W&B run so its files (config, summary, exit record) are complete, also after a failure.

    WandbLogger leaves the run open at the end of ``fit``; left to the interpreter's exit, the W&B
    service can stop before it has written them.
    """
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=exit_code)


if __name__ == "__main__":
    main(sys.argv[1:])
