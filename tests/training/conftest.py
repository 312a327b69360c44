"""Helpers to run train.py in a subprocess from a temporary working directory (configs use relative paths)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.tiny import TINY_ARGS

REPO = Path(__file__).resolve().parents[2]


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
    return list(TINY_ARGS)
