"""Shared fixtures. Real data lives in ``../shared`` (or ``$XCOS_SHARED``), never in this repository."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# On a loaded 2-core machine W&B can take longer than its default 90 s to start; the runs would then fall
# back to a disabled logger (ResilientWandbLogger) and tests reading the run files would fail.
os.environ.setdefault("WANDB_INIT_TIMEOUT", "600")

REPO = Path(__file__).resolve().parents[1]


def _shared_root() -> Path:
    return Path(os.environ.get("XCOS_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """Root of the shared real data; under ``CI=true`` a missing folder fails instead of skipping."""
    root = _shared_root()
    if not (root / "data").is_dir():
        msg = f"real data not found at {root} (set XCOS_SHARED)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return root


@pytest.fixture(autouse=True)
def _isolated_wandb(tmp_path, monkeypatch):
    """Keep W&B files of every test in its temporary folder, offline."""
    for var in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    # landmark cache of --align: never the user's ~/.cache, and never shared between tests
    monkeypatch.setenv("XCOS_CACHE_DIR", str(tmp_path / "xcos_cache"))
    # An in-process W&B run (e.g. a callback test) leaves WANDB_SERVICE in os.environ; a train.py subprocess
    # inheriting it attaches to that test's service, which writes the run's .wandb log somewhere else.
    monkeypatch.delenv("WANDB_SERVICE", raising=False)
