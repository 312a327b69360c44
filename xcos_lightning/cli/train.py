"""``train.py``: LightningCLI over ``XCosModule`` and any LightningDataModule (fit / validate / test)."""
from __future__ import annotations

import os
import sys

# Offline unless the user asks otherwise: no login, no network wait; `wandb sync` uploads later.
os.environ.setdefault("WANDB_MODE", "offline")

import re  # noqa: E402
from typing import Any  # noqa: E402

import yaml  # noqa: E402
from lightning.fabric.utilities.cloud_io import get_filesystem  # noqa: E402
from lightning.pytorch import LightningDataModule  # noqa: E402
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback  # noqa: E402
from lightning.pytorch.loggers import Logger  # noqa: E402
from lightning.pytorch.utilities import rank_zero_warn  # noqa: E402

from xcos_lightning.cpu_allocator import retain_freed_memory  # noqa: E402
from xcos_lightning.errors import UnsafeFileError, XCosError, error_message  # noqa: E402
from xcos_lightning.io.checkpoint import read_checkpoint  # noqa: E402
from xcos_lightning.module import XCosModule  # noqa: E402

# How a config names code to import: a class or callable ("os.system") or a model SPEC ("pkg.module:function").
_IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+|[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
_ALLOWED_PREFIX = "xcos_lightning."


class LogConfigCallback(SaveConfigCallback):
    """Saves ``config.yaml`` beside the run and also sends the resolved config to the logger (W&B).

    A log folder that cannot be written (read-only, full, not a folder) costs the ``config.yaml`` and one
    warning, never the run: checkpoints have their own folder.
    """

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.already_saved:
            return
        log_dir = trainer.log_dir  # a broadcast under DDP: every rank must take part, not rank 0 alone
        if trainer.is_global_zero:
            if self.save_to_log_dir:
                path = os.path.join(log_dir, self.config_filename)
                try:
                    get_filesystem(log_dir).makedirs(log_dir, exist_ok=True)
                    self.parser.save(self.config, path, skip_none=False, overwrite=self.overwrite,
                                     multifile=self.multifile)
                except OSError as err:
                    rank_zero_warn(f"could not write the run config to {path} ({type(err).__name__}: {err}); "
                                   "training goes on and the config still goes to the logger")
            self.save_config(trainer, pl_module, stage)
        # Every rank sets it (no broadcast): rank 0 alone may have failed to write.
        self.already_saved = True

    def save_config(self, trainer, pl_module, stage: str) -> None:
        if isinstance(trainer.logger, Logger):
            config = self.parser.dump(self.config, skip_none=False, format="yaml")
            trainer.logger.log_hyperparams({"config": _yaml_to_dict(config)})


def _yaml_to_dict(text: str) -> dict:
    return yaml.safe_load(text)


class XCosCLI(LightningCLI):
    """LightningCLI whose configs are read in omegaconf+ mode: an interpolation such as ``${....default_root_dir}``
    resolves after every ``--config`` file and command-line value are merged, so an experiment writes its run
    folder once and ``--trainer.default_root_dir`` moves the logger's and the checkpoints' folders with it."""

    def __init__(self, *args: Any, parser_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, parser_kwargs={"parser_mode": "omegaconf+", **(parser_kwargs or {})}, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        # The number of training identities is a property of the data, never typed twice.
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")

    def parse_arguments(self, parser, args) -> None:
        """Parse, then check a ``--ckpt_path`` checkpoint before LightningCLI re-reads the model's config from it.

        LightningCLI (after this hook) instantiates the model from the checkpoint's hyper-parameters, so a
        crafted checkpoint could name any installed callable. Here the file is read weights-only with errors
        naming it, and every class, callable or ``module:function`` SPEC it names must belong to this package
        or be named by the user's own config too."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path or not os.path.isfile(ckpt_path):
            return
        hparams = read_checkpoint(ckpt_path).get("hyper_parameters") or {}
        hparams.pop("_instantiator", None)
        model = self.config[subcommand].get("model")
        _refuse_foreign_imports(hparams, ckpt_path, set(_strings(model.as_dict() if model is not None else {})))


def _strings(value: object):
    """Every string inside nested dicts and lists."""
    if isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value


def _refuse_foreign_imports(value: object, ckpt_path: str, trusted: set[str], where: str = "hyper_parameters") -> None:
    """Raise UnsafeFileError if ``value`` (a checkpoint's hyper-parameters) names code to import outside the
    package that the ``trusted`` strings (the user's own model config) do not name."""
    if isinstance(value, dict):
        for key, item in value.items():
            _refuse_foreign_imports(item, ckpt_path, trusted, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _refuse_foreign_imports(item, ckpt_path, trusted, f"{where}[{i}]")
    elif (isinstance(value, str) and _IMPORT_PATH.fullmatch(value) and not value.startswith(_ALLOWED_PREFIX)
          and value not in trusted):
        raise UnsafeFileError(
            f"{ckpt_path}: {where} = {value!r} names code outside {_ALLOWED_PREFIX}*, which resuming would import "
            "and call; refused. Resume only checkpoints you trust; if you wrote this one, name the same value in "
            "your config or on the command line (e.g. --model.teacher) and resume again.")


def run(args: list[str] | None = None) -> None:
    """Run the LightningCLI (``fit``, ``validate``, ``test``, ...) on ``args`` (default ``sys.argv[1:]``);
    errors propagate."""
    failed = True
    try:
        XCosCLI(
            XCosModule,
            LightningDataModule,
            subclass_mode_data=True,
            save_config_callback=LogConfigCallback,
            save_config_kwargs={"overwrite": True},
            args=args,
            auto_configure_optimizers=False,
        )
        failed = False
    finally:
        _finish_wandb(exit_code=int(failed))


def main(args: list[str] | None = None) -> int:
    """``train.py`` and the ``xcos-train`` console script: :func:`run`, with explain.py's exit-code rule.

    0 on success; 2 on bad input: a usage error (jsonargparse), or an ``xcos_lightning.errors`` exception,
    printed as one line (a corrupt image met in a DataLoader worker included); ``--debug`` anywhere in
    ``args`` shows its traceback instead.
    """
    from_argv = args is None
    given = list(sys.argv[1:] if from_argv else args)
    args = [a for a in given if a != "--debug"]
    debug = len(args) < len(given)
    if from_argv:
        sys.argv[1:] = args  # LightningCLI reads the command line itself (and warns when also given args)
    retain_freed_memory()
    try:
        run(None if from_argv else args)
    except XCosError as exc:
        if debug:
            raise
        print(f"train.py: error: {error_message(exc)}", file=sys.stderr)
        return 2
    return 0


def _finish_wandb(exit_code: int) -> None:
    """Close the W&B run so its files (config, summary, exit record) are complete, also after a failure.

    WandbLogger leaves the run open at the end of ``fit``; left to the interpreter's exit, the W&B
    service can stop before it has written them.
    """
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=exit_code)


if __name__ == "__main__":
    sys.exit(main())
