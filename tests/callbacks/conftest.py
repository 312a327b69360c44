"""Runs train.py in a subprocess (configs use relative paths; DDP must not re-launch pytest) with a monitor overlay."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers.tiny import TINY_ARGS

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "configs/demo.yaml"


def _monitor_overlay(folder: Path, **init_args) -> Path:
    """A config file whose callback list is only an ExplanationMonitor with ``init_args``."""
    path = folder / "monitor.yaml"
    callback = {"class_path": "xcos_lightning.callbacks.ExplanationMonitor", "init_args": init_args}
    path.write_text(yaml.safe_dump({"trainer": {"callbacks": [callback]}}))
    return path


def _run_train(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """``train.py args`` in ``cwd``, offline, one thread per process; fails the test with its output on error."""
    cwd.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        pytest.fail(f"train.py {' '.join(args)} failed ({proc.returncode}):\n"
                    f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def _monitor_records(root: Path) -> list[dict]:
    """The lines of ``<root>/runs/demo/explain/metrics.jsonl`` (the demo's default_root_dir)."""
    lines = (root / "runs/demo/explain/metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture
def run_train():
    return _run_train


@pytest.fixture
def monitor_overlay():
    return _monitor_overlay


@pytest.fixture
def monitor_records():
    return _monitor_records


@pytest.fixture
def demo_args() -> list[str]:
    """``--config configs/demo.yaml`` plus the tiny trunk and data."""
    return ["--config", str(DEMO), *TINY_ARGS]
