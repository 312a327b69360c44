"""The MS1M and WebFace42M configs cannot train here (8 GPUs, 5.2M / 42.5M faces): run them end to end on a
tiny data set with their layout (``train.rec``/``.idx``/``property`` with header record 0, insightface ``.bin`` val sets), on CPU
with a tiny trunk, through ``train.py`` in a subprocess; and print each config."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from xcos_lightning.datamodules.pair_set import PairSet
from xcos_lightning.datamodules.recordio import RecordIOReader, RecordIOWriter

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs/ms1m").glob("*.yaml")) + sorted((REPO / "configs/webface42m").glob("*.yaml"))
SAMPLE_RATE = {"ms1m": 1.0, "webface42m": 0.2}  # 93k classes fit whole; 2M are sampled
VAL_SETS = ("lfw", "cfp_fp", "agedb_30")
IDENTITIES, IMAGES_PER_IDENTITY, VAL_PAIRS = 4, 3, 10  # 10 pairs: the fewest 10-fold accuracy allows
# Single-process CPU, full precision, the tiny trunk: what is left of the config is its data, model and loop.
CPU = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.strategy", "auto",
       "--trainer.precision", "32-true", "--trainer.fast_dev_run", "1",
       "--model.backbone.init_args.trunk", "tiny", "--model.backbone.init_args.trunk_kwargs", "{}",
       "--data.init_args.batch_size", str(VAL_PAIRS), "--data.init_args.num_workers", "0"]


def jpeg(rng: np.random.Generator) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def ms1m_root(tmp_path_factory) -> Path:
    """``train.rec`` + ``train.idx`` + ``property`` and ``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``."""
    root = tmp_path_factory.mktemp("ms1m-retinaface-t1")
    rng = np.random.default_rng(0)
    n = IDENTITIES * IMAGES_PER_IDENTITY
    with RecordIOWriter(root / "train.rec") as writer:
        writer.write_header_record(n)  # record 0: flag 2, label [n + 1, n + 1]
        for key in range(1, n + 1):
            writer.write_image(key, jpeg(rng), float((key - 1) // IMAGES_PER_IDENTITY))
        writer.write_property(IDENTITIES)
    for name in VAL_SETS:
        images = [jpeg(rng) for _ in range(2 * VAL_PAIRS)]
        PairSet(images, [i % 2 == 0 for i in range(VAL_PAIRS)], name).save_bin(root / f"{name}.bin")
    return root


def train(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        pytest.fail(f"train.py {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def test_the_tiny_rec_has_the_ms1m_layout(ms1m_root):
    reader = RecordIOReader(ms1m_root / "train.rec")
    assert reader.read_header(0).labels[0] == IDENTITIES * IMAGES_PER_IDENTITY + 1
    assert reader.image_keys == list(range(1, IDENTITIES * IMAGES_PER_IDENTITY + 1))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_print_config(config, tmp_path):
    printed = yaml.safe_load(train(["fit", "--config", str(config), "--print_config"], cwd=tmp_path).stdout)
    assert printed["trainer"]["devices"] == 8 and printed["trainer"]["strategy"] == "ddp"
    assert printed["trainer"]["precision"] == "bf16-mixed"
    data = printed["data"]["init_args"]
    assert data["train"].endswith("/train.rec")
    assert set(data["val_sets"]) == set(VAL_SETS)
    assert printed["model"]["backbone"]["init_args"]["trunk"] in ("iresnet50", "iresnet100")
    assert printed["model"]["lr"] == 0.1 and printed["model"]["milestones"]
    head = printed["model"]["head"]
    assert head["class_path"] == "xcos_lightning.models.PartialArcFace"
    assert head["init_args"]["sample_rate"] == SAMPLE_RATE[config.parent.name]


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_fast_dev_run_on_a_tiny_ms1m(config, ms1m_root, tmp_path):
    val_sets = "{" + ", ".join(f"{name}: {ms1m_root / name}.bin" for name in VAL_SETS) + "}"
    proc = train(["fit", "--config", str(config), "--data.init_args.train", str(ms1m_root / "train.rec"),
                  "--data.init_args.val_sets", val_sets, *CPU], cwd=tmp_path)
    log = proc.stdout + proc.stderr
    for name in VAL_SETS:
        assert f"val/{name}/acc_xcos" in log
