"""Untrusted files on the training path: crafted checkpoints given to ``--ckpt_path``, corrupt ``.rec`` records.

(The readers' own refusals are tested beside them: tests/datamodules, tests/models.)
"""
from __future__ import annotations

import io
import os
import sys
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import Logger
from PIL import Image

from xcos_lightning.cli.train import run
from xcos_lightning.datamodules import FaceDataModule
from xcos_lightning.datamodules.image_io import open_image
from xcos_lightning.datamodules.recordio import RecordIOWriter
from xcos_lightning.datamodules.recordio_dataset import RecordIODataset
from xcos_lightning.errors import DataFormatError, UnsafeFileError
from xcos_lightning.models import GridBackbone
from xcos_lightning.module import XCosModule

REPO = Path(__file__).resolve().parents[2]


def _resume(ckpt: Path, monkeypatch, *extra: str) -> None:
    monkeypatch.setattr(sys, "argv", ["train.py"])  # pytest's own arguments are not train.py's
    run(["fit", "--config", str(REPO / "configs/demo.yaml"), "--ckpt_path", str(ckpt), *extra])


def test_resume_refuses_a_checkpoint_that_runs_code(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"lr": Evil()}}, evil)
    with pytest.raises(UnsafeFileError, match=r"evil\.ckpt: refused to load, nothing in it was run.*posix\.system"):
        _resume(evil, monkeypatch)
    assert not marker.exists()


@pytest.mark.parametrize("hparams, where", [
    ({"head": "os.kill"}, "hyper_parameters.head"),
    ({"backbone": {"class_path": "subprocess.Popen", "init_args": {"args": ["touch", "x"]}}},
     "hyper_parameters.backbone.class_path"),
    ({"teacher": "os:abort"}, "hyper_parameters.teacher"),  # a module:function model SPEC
])
def test_resume_refuses_a_weights_only_checkpoint_naming_foreign_code(tmp_path, monkeypatch, hparams, where):
    # Loads fine weights-only, but LightningCLI would import and call what the hyper-parameters name.
    crafted = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": hparams}, crafted)
    with pytest.raises(UnsafeFileError, match=rf"crafted\.ckpt: {where} = .* names code outside xcos_lightning"):
        _resume(crafted, monkeypatch)


def test_resume_accepts_foreign_code_the_users_own_config_names(tmp_path, monkeypatch):
    crafted = tmp_path / "mine.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"teacher": "os:abort"}}, crafted)
    instantiated = []
    # The check lets it through to instantiation, stubbed here: os:abort must not actually run.
    monkeypatch.setattr("xcos_lightning.cli.train.XCosCLI.instantiate_classes", lambda self: instantiated.append(1))
    monkeypatch.setattr("xcos_lightning.cli.train.XCosCLI._run_subcommand", lambda self, name: None)
    _resume(crafted, monkeypatch, "--model.teacher", "os:abort")
    assert instantiated == [1]


@pytest.mark.parametrize("mode, fmt", [("RGBA", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("1", "PNG"), ("L", "JPEG"),
                                       ("CMYK", "JPEG"), ("I;16", "PNG")])
def test_any_channel_layout_decodes_to_8_bit_rgb(mode, fmt):
    gradient = np.tile(np.arange(8, dtype=np.uint16) * (8000 if mode == "I;16" else 30), (8, 1))
    image = Image.fromarray(gradient) if mode == "I;16" else Image.fromarray(gradient.astype(np.uint8)).convert(mode)
    buf = io.BytesIO()
    image.save(buf, fmt)
    rgb = np.asarray(open_image(buf.getvalue(), "face.png"))
    assert rgb.shape == (8, 8, 3) and rgb.dtype == np.uint8
    if mode in ("I;16", "L", "LA"):  # 16-bit values are scaled, not clipped at 255 (which would turn them white)
        row = rgb[0, :, 0].astype(int)
        assert (np.diff(row) > 0).all() if fmt == "PNG" else row[-1] > row[0]


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _rec(folder: Path, n: int = 12, classes: int = 3) -> Path:
    """MS1M-style .rec: header record 0, images 1..n, labels cycling over ``classes``, a property file."""
    rec = folder / "train.rec"
    with RecordIOWriter(rec) as writer:
        writer.write_header_record(n)
        for key in range(1, n + 1):
            writer.write_image(key, _png(key), float((key - 1) % classes))
        writer.write_property(classes)
    return rec


def _corrupt(rec: Path, key: int, how: str) -> None:
    lines = rec.with_suffix(".idx").read_text().splitlines()
    offsets = {int(k): int(o) for k, o in (line.split("\t") for line in lines)}
    raw = bytearray(rec.read_bytes())
    at = offsets[key]
    if how == "magic":
        raw[at:at + 4] = b"\0\0\0\0"
    elif how == "image":
        raw[at + 8 + 24:at + 8 + 40] = b"\xff" * 16  # the header stays, the PNG signature is gone
    else:  # truncated tail: the file ends inside record `key`
        del raw[at + 10:]
    rec.write_bytes(bytes(raw))


class Counter(Logger):
    name, version = "counter", 0

    def __init__(self) -> None:
        super().__init__()
        self.values: list[float] = []

    def log_metrics(self, metrics, step=None) -> None:
        if "train/skipped_bad_records" in metrics:
            self.values.append(metrics["train/skipped_bad_records"])

    def log_hyperparams(self, *args, **kwargs) -> None:
        pass


@pytest.mark.parametrize("how", ["magic", "truncated"])
def test_unreadable_rec_headers_stop_setup_or_are_left_out_counted(tmp_path, how):
    rec = _rec(tmp_path)
    _corrupt(rec, 12 if how == "truncated" else 5, how)
    key = 12 if how == "truncated" else 5
    with pytest.raises(DataFormatError, match=rf"train\.rec: record {key} \(part at offset \d+\)"):
        len(RecordIODataset(rec))
    with pytest.warns(UserWarning, match=rf"train\.rec: left out 1 unreadable records.*record {key}"):
        data = RecordIODataset(rec, skip_bad_records=True)
        assert len(data) == 11 and data.skipped_keys == [key] and data.labels.tolist().count((key - 1) % 3) == 3


def test_undecodable_training_images_stop_training_or_are_replaced_and_counted(tmp_path):
    rec = _rec(tmp_path)
    _corrupt(rec, 4, "image")

    def fit(skip: bool) -> tuple[L.Trainer, Counter]:
        data = FaceDataModule(str(rec), batch_size=4, num_workers=0, augment=False,
                              skip_bad_records=skip)
        counter = Counter()
        trainer = L.Trainer(accelerator="cpu", max_epochs=2, limit_val_batches=0, logger=counter,
                            log_every_n_steps=1, enable_progress_bar=False, enable_checkpointing=False,
                            default_root_dir=tmp_path)
        module = XCosModule(GridBackbone("tiny", grid_channels=8), num_classes=data.num_classes)
        trainer.fit(module, datamodule=data)
        return trainer, counter

    with pytest.raises(DataFormatError, match=r"train\.rec: record 4 \(offset \d+\): cannot decode image"):
        fit(skip=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer, counter = fit(skip=True)
    assert trainer.global_step == 6  # 12 anchors / 4 per batch x 2 epochs: nothing dropped
    # Image 4 is an anchor once per epoch and a partner sometimes: at least 2 replacements, counted as they happen.
    assert counter.values == sorted(counter.values) and counter.values[-1] >= 2
    assert int(trainer.lightning_module.skipped_bad_records) == counter.values[-1]
