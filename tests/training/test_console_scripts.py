"""The installed console scripts (``.venv/bin/xcos-train``, ``xcos-explain``: ``sys.exit(main())``) keep the
exit-code rule: 0 success, 1 a failed check, 2 bad input (one line on stderr; ``--debug``: the traceback)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.tiny import TINY_ARGS
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TINY_MODEL = '''
import torch
from torch import nn

def tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
'''


def script(name: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    exe = BIN / name
    assert exe.is_file(), f"{exe} is not installed (pip install -e .)"
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(cwd)}
    return subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL)


def test_xcos_train_exits_0_on_success(tmp_path):
    proc = script("xcos-train", ["fit", "--config", str(REPO / "configs/demo.yaml"), *TINY_ARGS,
                                 "--trainer.fast_dev_run", "1"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture
def corrupt_faces(tmp_path) -> Path:
    """Two identity folders of 4 images; Bob's last is junk bytes (decoded in a DataLoader worker)."""
    rng = np.random.default_rng(0)
    for name in ("Ann", "Bob"):
        (tmp_path / "faces" / name).mkdir(parents=True)
        for i in range(1, 5):
            path = tmp_path / "faces" / name / f"{name}_{i:04d}.jpg"
            if path.name == "Bob_0004.jpg":
                path.write_bytes(b"junk")
            else:
                Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
    return tmp_path / "faces"


def _train_on(faces: Path, *extra: str) -> list[str]:
    return ["fit", "--config", str(REPO / "configs/arcface_baseline.yaml"), *extra, "--trainer.fast_dev_run", "4",
            "--model.backbone.init_args.trunk", "tiny", "--model.backbone.init_args.trunk_kwargs", "{}",
            "--data.class_path", "xcos_lightning.datamodules.FaceDataModule", "--data.init_args.train", str(faces),
            "--data.init_args.num_workers", "1", "--data.init_args.batch_size", "2", "--data.init_args.augment",
            "false"]


def test_xcos_train_reports_a_corrupt_image_of_a_worker_in_one_line_and_exits_2(corrupt_faces, tmp_path):
    proc = script("xcos-train", _train_on(corrupt_faces), tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("train.py: error: ") and "Bob_0004.jpg: cannot decode" in last, proc.stderr[-3000:]
    assert "Original Traceback" not in proc.stderr and "Traceback" not in proc.stderr


def test_xcos_train_debug_shows_the_traceback(corrupt_faces, tmp_path):
    proc = script("xcos-train", _train_on(corrupt_faces, "--debug"), tmp_path)
    assert proc.returncode == 1  # the uncaught exception
    assert "Traceback (most recent call last)" in proc.stderr and "DataFormatError" in proc.stderr


def test_xcos_train_usage_error_exits_2(tmp_path):
    proc = script("xcos-train", ["fit", "--config", str(REPO / "configs/demo.yaml"), "--trainer.max_epochs",
                                 "many"], tmp_path)
    assert proc.returncode == 2


def test_xcos_explain_exit_codes(tmp_path):
    (tmp_path / "tiny_models.py").write_text(TINY_MODEL)
    export = ["export", "tiny_models:tiny", "--format", "torchscript", "--out", str(tmp_path / "m.pt")]
    ok = script("xcos-explain", export, tmp_path)
    assert ok.returncode == 0, ok.stderr[-3000:]
    failed = script("xcos-explain", [*export, "--tolerance", "-1"], tmp_path)
    assert failed.returncode == 1 and "parity: FAILED" in failed.stdout
    bad = script("xcos-explain", ["export", "tiny_models:tiny", "--format", "pickle", "--out", "x"], tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "explain.py export: error: --format 'pickle': choose one of safetensors, torchscript, onnx"]
    usage = script("xcos-explain", ["no-such-command"], tmp_path)
    assert usage.returncode == 2
