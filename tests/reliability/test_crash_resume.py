"""A run killed with SIGKILL mid-epoch resumes from last.ckpt and ends exactly where an uninterrupted run ends.

Resume granularity is one batch: ``last.ckpt`` is written every ``every_n_train_steps`` steps and at each
epoch end (configs: ``xcos_lightning.callbacks.LastCheckpoint``; their monitored ModelCheckpoint keeps only the
best epoch), and ``PairLoader`` stores the position in the epoch. The GradScaler test below builds its own
Trainer with Lightning's ``ModelCheckpoint(save_last=True, every_n_train_steps=3)``.
"""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins import MixedPrecision

from xcos_lightning.checkpoint_io import AtomicCheckpointIO
from xcos_lightning.datamodules import SyntheticFacesDataModule
from xcos_lightning.datamodules.pair_sampling import PairLoader, PairSampler, TrainPairs
from xcos_lightning.models import GridBackbone
from xcos_lightning.module import XCosModule
from helpers.tiny import TINY_ARGS

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
# 8 identities x 4 images = 32 anchors = 8 steps of 4 pairs per epoch; 2 epochs = 16 steps.
TINY = [*TINY_ARGS, "--model.milestones", "[1]", "--trainer.max_epochs", "2", "--trainer.log_every_n_steps", "1",
        "--trainer.num_sanity_val_steps", "0"]
KILL_AFTER = 13  # epoch 1, batch 5 of 8: the last checkpoint (step 12) is mid-epoch


def _overlay(folder: Path, stall_marker: Path | None) -> Path:
    """Config on top of demo.yaml: CSV metrics, last.ckpt every 3 steps, optionally the stall callback."""
    callbacks = [{"class_path": "xcos_lightning.callbacks.LastCheckpoint",
                  "init_args": {"dirpath": str(folder / "checkpoints"), "every_n_train_steps": 3}}]
    if stall_marker is not None:
        callbacks.append({"class_path": "stall.StallAt",
                          "init_args": {"step": KILL_AFTER, "marker": str(stall_marker)}})
    import yaml

    path = folder / "overlay.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"trainer": {
        "default_root_dir": str(folder),
        "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(folder)}},
        "callbacks": callbacks}}))
    return path


def _train(folder: Path, stall_marker: Path | None = None, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    args = [sys.executable, str(REPO / "train.py"), "fit", "--config", str(REPO / "configs/demo.yaml"),
            "--config", str(_overlay(folder, stall_marker)), *TINY, *extra]
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(HERE), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(args, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)


def _finish(proc: subprocess.Popen, timeout: int = 300) -> None:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-5000:]


def _last_val(folder: Path) -> dict[str, float]:
    rows = [r for f in sorted(folder.glob("*/version_*/metrics.csv")) for r in csv.DictReader(f.open())]
    val = [r for r in rows if r.get("val/synth/acc_xcos")]
    return {k: float(v) for k, v in val[-1].items() if k.startswith("val/") and v}


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    whole, crashed, marker = tmp_path / "whole", tmp_path / "crashed", tmp_path / "stalled"
    reference = _train(whole)  # runs alongside the crashing run: same seed, no interruption
    victim = _train(crashed, stall_marker=marker)
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert victim.poll() is None, victim.communicate()[0][-5000:]
        assert time.monotonic() < deadline, "the run never reached the kill point"
        time.sleep(0.1)
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL
    last = crashed / "checkpoints/last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 12 and ckpt["epoch"] == 1  # mid-epoch 1: 4 of its 8 batches done
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"epoch": 1, "batches_done": 4, "batch_size": 4, "num_samples": 32}]

    _finish(_train(crashed, extra=("--ckpt_path", str(last))))
    _finish(reference)
    resumed, uninterrupted = (torch.load(f / "checkpoints/last.ckpt", weights_only=True) for f in (crashed, whole))
    assert resumed["global_step"] == uninterrupted["global_step"] == 16
    assert resumed["epoch"] == uninterrupted["epoch"]
    # Stated tolerance: 1e-6 on every weight and optimizer/scheduler value (CPU runs come out bit-identical).
    for key, value in uninterrupted["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, atol=1e-6, rtol=0, msg=key)
    optimizers = (c["optimizer_states"][0]["optimizers"] for c in (resumed, uninterrupted))
    for got, want in zip(*optimizers):
        assert got["param_groups"] == want["param_groups"]  # learning rates after the milestone
        for k in want["state"]:
            for name, t in want["state"][k].items():
                torch.testing.assert_close(got["state"][k][name], t, atol=1e-6, rtol=0)
    assert resumed["lr_schedulers"] == uninterrupted["lr_schedulers"]
    final_resumed, final_whole = _last_val(crashed), _last_val(whole)
    assert final_whole and final_resumed.keys() == final_whole.keys()
    for key, value in final_whole.items():
        assert abs(final_resumed[key] - value) <= 1e-6, (key, final_resumed[key], value)


def _loader(num_workers: int = 0, seed: int = 3) -> PairLoader:
    labels = torch.arange(24).div(4, rounding_mode="floor").numpy()  # 6 identities x 4 images
    pairs = TrainPairs(labels, lambda i: torch.tensor(float(i)), seed=seed)
    return PairLoader(pairs, batch_size=4, sampler=PairSampler(pairs, seed=seed), num_workers=num_workers,
                      persistent_workers=num_workers > 0)


def _keys(batches) -> list[list[float]]:
    return [b["img_a"].tolist() for b in batches]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_pair_loader_resumes_mid_epoch_and_starts_a_new_epoch_afresh(num_workers):
    whole = _loader()
    whole.sampler.set_epoch(2)
    epoch2 = _keys(whole)
    assert len(epoch2) == 6
    first = _loader()
    first.sampler.set_epoch(2)
    it = iter(first)
    seen = _keys([next(it), next(it)])
    state = first.state_dict()
    assert state == {"epoch": 2, "batches_done": 2, "batch_size": 4, "num_samples": 24}
    resumed = _loader(num_workers)  # workers prefetch indices as soon as iteration starts
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(2)  # Lightning sets the epoch before the first batch
    assert seen + _keys(resumed) == epoch2  # no batch twice, none missing
    assert _keys(resumed) == epoch2  # the skip applies to one pass only
    at_end = _loader()
    at_end.load_state_dict({**state, "batches_done": 6})
    at_end.sampler.set_epoch(3)  # an end-of-epoch checkpoint resumes with the next epoch, from its start
    whole.sampler.set_epoch(3)
    assert _keys(at_end) == _keys(whole)
    with pytest.raises(ValueError, match="batch_size=8"):
        _loader().load_state_dict({**state, "batch_size": 8})


class ScaleProbe(Callback):
    def on_train_start(self, trainer, pl_module) -> None:
        self.scale = trainer.precision_plugin.scaler.get_scale()


def test_amp_grad_scaler_state_travels_with_the_checkpoint(tmp_path):
    def run(max_steps, ckpt_path=None, init_scale=2.0 ** 12):
        data = SyntheticFacesDataModule(num_train_identities=6, images_per_identity=4, num_val_identities=6,
                                        val_pairs=20, batch_size=4)
        module = XCosModule(GridBackbone("tiny", grid_channels=8), num_classes=6)
        scaler = torch.amp.GradScaler("cpu", init_scale=init_scale, growth_interval=1)  # grows every good step
        probe = ScaleProbe()
        trainer = L.Trainer(accelerator="cpu", max_steps=max_steps, limit_val_batches=0, logger=False,
                            enable_progress_bar=False, default_root_dir=tmp_path,
                            plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler), AtomicCheckpointIO()],
                            callbacks=[ModelCheckpoint(dirpath=tmp_path, save_top_k=0, save_last=True,
                                                       every_n_train_steps=3), probe])
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
        return trainer, probe

    trainer, _ = run(3)
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)["MixedPrecision"]
    assert saved["scale"] == trainer.precision_plugin.scaler.get_scale() != 2.0 ** 12  # it moved
    _, probe = run(5, ckpt_path=tmp_path / "last.ckpt", init_scale=1.0)
    assert probe.scale == saved["scale"]  # restored, not the new run's initial scale
