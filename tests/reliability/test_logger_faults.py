"""Logger faults (no login or network, W&B disabled, unwritable log folder, failing writes): training goes on,
each failure is reported once, checkpoints are still written."""
from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from xcos_lightning.checkpoint_io import AtomicCheckpointIO
from xcos_lightning.datamodules import SyntheticFacesDataModule
from xcos_lightning.callbacks.last_checkpoint import LastCheckpoint
from xcos_lightning.models import GridBackbone
from xcos_lightning.module import XCosModule
from xcos_lightning.wandb_logger import ResilientWandbLogger
from helpers.tiny import TINY_ARGS

REPO = Path(__file__).resolve().parents[2]
TINY = [*TINY_ARGS, "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1",
        "--trainer.num_sanity_val_steps", "0"]


def _train(tmp_path: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    # demo.yaml's logger and plugins; only last.ckpt as callback (the tests are about the logger)
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": "xcos_lightning.callbacks.LastCheckpoint",
         "init_args": {"dirpath": str(tmp_path / "checkpoints")}}]}}))
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "fit", "--config", str(REPO / "configs/demo.yaml"),
                           "--config", str(overlay), *TINY, *extra], cwd=tmp_path, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=400, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 2
    return proc


@pytest.mark.slow
def test_no_login_no_network_and_an_unwritable_log_folder(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the log folder should be")
    # Online mode without any credentials (HOME, netrc and W&B settings point nowhere) and a server address
    # that refuses connections locally: wandb.init fails the way it does on a cluster without network.
    env = {"WANDB_MODE": "online", "HOME": str(tmp_path), "NETRC": str(tmp_path / "no_netrc"),
           "WANDB_API_KEY": "", "WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_INIT_TIMEOUT": "5"}
    proc = _train(tmp_path, env, "--trainer.logger.init_args.save_dir", str(blocker / "logs"))
    assert proc.stderr.count("W&B run could not start") == 1, proc.stderr[-3000:]
    assert "training goes on with W&B offline" in proc.stderr
    assert proc.stderr.count("could not write the run config") == 1 and "not_a_folder" in proc.stderr


@pytest.mark.slow
def test_wandb_disabled(tmp_path):
    proc = _train(tmp_path, {"WANDB_MODE": "disabled"})
    assert "W&B" not in proc.stderr
    assert not list(tmp_path.rglob("offline-run-*")) and not list(tmp_path.rglob("run-*.wandb"))


def test_failing_writes_warn_once_and_training_goes_on(tmp_path, monkeypatch):
    logger = ResilientWandbLogger(project="xcos-test", save_dir=str(tmp_path), offline=True, retries=0)
    calls = []

    def broken_log(*args, **kwargs):
        calls.append(args)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(logger.experiment, "log", broken_log)
    data = SyntheticFacesDataModule(num_train_identities=6, images_per_identity=4, num_val_identities=6,
                                    val_pairs=20, batch_size=4)
    trainer = L.Trainer(accelerator="cpu", max_steps=4, limit_val_batches=1, num_sanity_val_steps=0,
                        log_every_n_steps=1, logger=logger, enable_progress_bar=False, default_root_dir=tmp_path,
                        plugins=[AtomicCheckpointIO()], callbacks=[LastCheckpoint(dirpath=tmp_path / "ckpt")])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(XCosModule(GridBackbone("tiny", grid_channels=8), num_classes=6), datamodule=data)
    failures = [w for w in caught if "W&B log_metrics failed" in str(w.message)]
    assert len(failures) == 1 and "No space left on device" in str(failures[0].message)
    assert len(calls) == 1 and logger.dropped  # later steps were not even tried
    assert trainer.global_step == 4
    assert torch.load(tmp_path / "ckpt/last.ckpt", weights_only=True)["global_step"] == 4
    import wandb

    wandb.finish()


def _failing_logger(tmp_path, monkeypatch, fail_attempts: int | None, **kwargs):
    """A logger whose W&B ``log`` fails on its first ``fail_attempts`` attempts (None: always); returns it and
    the indices (0-based ``log_metrics`` calls) at which W&B was actually called."""
    logger = ResilientWandbLogger(project="xcos-test", save_dir=str(tmp_path), offline=True, **kwargs)
    attempts, index = [], [0]
    real_log = logger.experiment.log

    def log(*args, **kw):
        attempts.append(index[0])
        if fail_attempts is None or len(attempts) <= fail_attempts:
            raise OSError(28, "No space left on device")
        return real_log(*args, **kw)

    monkeypatch.setattr(logger.experiment, "log", log)

    def call(n: int) -> None:
        for _ in range(n):
            logger.log_metrics({"train/loss": 1.0}, step=index[0])
            index[0] += 1
    return logger, attempts, call


def test_a_permanent_fault_is_retried_with_backoff_then_w_and_b_stops(tmp_path, monkeypatch):
    logger, attempts, call = _failing_logger(tmp_path, monkeypatch, None, retries=3, retry_after=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call(40)
    # Tried at call 0, then after 2, 4 and 8 dropped calls; the 4th failure in a row stops W&B output.
    assert attempts == [0, 3, 8, 17] and logger.dropped
    messages = [str(w.message) for w in caught if "W&B" in str(w.message)]
    assert len(messages) == 2
    assert "tried again after 2 calls (up to 3 retries)" in messages[0]
    assert "4 failures in a row" in messages[1] and "stops here" in messages[1]
    import wandb

    wandb.finish()


def test_a_transient_fault_costs_only_the_dropped_calls(tmp_path, monkeypatch):
    logger, attempts, call = _failing_logger(tmp_path, monkeypatch, 2, retries=3, retry_after=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call(20)
    # Fails at 0 and 3, works at 8 and from then on every call goes through again.
    assert attempts == [0, 3, *range(8, 20)] and not logger.dropped and logger.failures == 0
    assert any("works again after 2 failed calls" in str(w.message) for w in caught)
    import wandb

    wandb.finish()


def test_retry_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="retries=-1"):
        ResilientWandbLogger(project="xcos-test", save_dir=str(tmp_path), offline=True, retries=-1)


def test_a_run_that_cannot_start_offline_either_is_disabled(tmp_path, monkeypatch):
    import wandb

    real_init = wandb.init

    def init(**kwargs):
        if kwargs.get("mode") != "disabled":
            raise OSError(30, "Read-only file system")
        return real_init(**kwargs)

    monkeypatch.setattr(wandb, "init", init)
    logger = ResilientWandbLogger(project="xcos-test", save_dir=str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        experiment = logger.experiment
        logger.log_metrics({"train/loss": 1.0}, step=0)
    messages = [str(w.message) for w in caught if "W&B run could not start" in str(w.message)]
    assert len(messages) == 2 and "W&B offline" in messages[0] and "W&B disabled" in messages[1]
    assert type(experiment).__name__ == "NoopRun"  # every W&B call is a no-op from here on
    wandb.finish()
