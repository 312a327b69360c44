"""Helpers to run train.py in a subprocess from a temporary working directory (configs use relative paths)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Narrow, fast settings on top of any config: the tests check the plumbing, benchmarks check speed.
TINY = ["--trainer.check_val_every_n_epoch", "1", "--model.backbone.init_args.trunk", "tiny", "--model.backbone.init_args.trunk_kwargs", "{}",
        "--data.init_args.num_train_identities", "8", "--data.init_args.images_per_identity", "4",
        "--data.init_args.num_val_identities", "6", "--data.init_args.val_pairs", "20",
        "--data.init_args.batch_size", "4", "--data.init_args.num_workers", "0"]


def _run_train(args: list[str], cwd: Path, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        pytest.fail(f"train.py {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


@pytest.fixture
def run_train():
    """``run_train(args, cwd)`` runs ``train.py`` in a subprocess and fails the test with its output on error."""
    return _run_train


@pytest.fixture
def tiny_args() -> list[str]:
    return list(TINY)
