"""End-to-end tests of train.py: every config, DDP on CPU, resume from last.ckpt."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from helpers.configs import EXPERIMENTS
from helpers.wandb_log import RunLog

REPO = Path(__file__).resolve().parents[2]
CPU_CONFIGS = ["demo.yaml", "arcface_baseline.yaml"]
SHORT = ["--trainer.max_steps", "2", "--trainer.limit_val_batches", "2", "--trainer.num_sanity_val_steps", "0"]


@pytest.mark.parametrize("config", CPU_CONFIGS)
def test_fast_dev_run_of_each_cpu_config(config, run_train, tmp_path):
    # The config's own backbone, only the data shrunk.
    run_train(["fit", "--config", str(REPO / "configs" / config), "--trainer.fast_dev_run", "1",
               "--data.init_args.num_train_identities", "8", "--data.init_args.images_per_identity", "4",
               "--data.init_args.val_pairs", "8", "--data.init_args.batch_size", "2",
               "--data.init_args.num_workers", "0"], cwd=tmp_path)
    # Like Lightning's own checkpoint callbacks, LastCheckpoint writes nothing in a plumbing check.
    assert not list(tmp_path.rglob("*.ckpt"))


def test_xcos_with_a_trained_arcface_teacher(run_train, tiny_args, tmp_path):
    run_train(["fit", "--config", str(REPO / "configs/arcface_baseline.yaml"), *tiny_args, *SHORT], cwd=tmp_path)
    teacher = tmp_path / "runs/arcface_baseline/checkpoints/last.ckpt"
    assert teacher.is_file()
    run_train(["fit", "--config", str(REPO / "configs/xcos_from_arcface.yaml"), *tiny_args, *SHORT], cwd=tmp_path)
    ckpt = torch.load(tmp_path / "runs/xcos_from_arcface/checkpoints/last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["teacher"] == "runs/arcface_baseline/checkpoints/last.ckpt"
    assert any(k.startswith("teacher.") for k in ckpt["state_dict"])


@pytest.mark.parametrize("config", EXPERIMENTS)
def test_print_config(config, run_train, tmp_path):
    path = REPO / "configs" / config
    out = run_train(["fit", "--config", str(path), "--print_config"], cwd=tmp_path).stdout
    printed = yaml.safe_load(out)
    assert printed["model"]["backbone"]["class_path"] == "xcos_lightning.models.GridBackbone"


def test_wandb_offline_run_holds_config_and_metrics(run_train, tiny_args, tmp_path):
    run_train(["fit", "--config", str(REPO / "configs/demo.yaml"), *tiny_args, "--trainer.max_epochs", "1",
               "--trainer.limit_train_batches", "2", "--trainer.log_every_n_steps", "1"], cwd=tmp_path)
    runs = list((tmp_path / "runs/demo/wandb").glob("offline-run-*"))
    assert len(runs) == 1
    log = RunLog(runs[0])  # what `wandb sync` would upload
    assert log.config["config"]["model"]["backbone"]["init_args"]["trunk"] == "tiny"
    assert len(log.history["val/synth/acc_xcos"]) == 1 and len(log.history["train/loss"]) >= 1
    assert log.exit_code == 0  # the run was closed, not cut off at interpreter exit
    assert (tmp_path / "runs/demo/checkpoints/last.ckpt").is_file()


def test_resume_from_last_ckpt_continues_global_step(run_train, tiny_args, tmp_path):
    # 8 identities x 4 images = 32 anchors = 8 steps of 4 pairs per epoch.
    common = ["fit", "--config", str(REPO / "configs/demo.yaml"), *tiny_args, "--trainer.limit_val_batches", "1"]
    run_train([*common, "--trainer.max_epochs", "1"], cwd=tmp_path)
    last = tmp_path / "runs/demo/checkpoints/last.ckpt"
    first = torch.load(last, weights_only=True)
    assert first["global_step"] == 8
    run_train([*common, "--trainer.max_epochs", "2", "--ckpt_path", str(last)], cwd=tmp_path)
    resumed = torch.load(last, weights_only=True)
    assert resumed["global_step"] == 16
    # Optimizer state travelled: SGD momentum buffers exist after resume.
    assert resumed["optimizer_states"][0]["optimizers"][0]["state"]


def test_ddp_two_cpu_processes(run_train, tiny_args, tmp_path):
    out = run_train(["fit", "--config", str(REPO / "configs/demo.yaml"), *tiny_args, "--trainer.max_epochs", "1",
                     "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"],
                    cwd=tmp_path, timeout=600)
    ckpt = torch.load(tmp_path / "runs/demo/checkpoints/last.ckpt", weights_only=True)
    # 32 anchors sharded over 2 ranks of 4 pairs: 4 steps each, not 8.
    assert ckpt["global_step"] == 4, out.stderr[-2000:]
