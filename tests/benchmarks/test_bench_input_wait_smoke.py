"""``benchmarks/bench_input_wait.py``: its row arithmetic against hand-computed values, and a tiny run of two
synthetic configs through ``train.py fit`` whose table has a row per config with the profiler's numbers."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_input_wait", REPO / "benchmarks/bench_input_wait.py")
bench_input_wait = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_input_wait)


def test_summarise_leaves_out_warmup_and_divides_summed_wait_by_summed_step():
    # Marks 0, 10, 11, 13, 14: steps 1..4 take 10, 1, 2, 1 s; warm-up 3 leaves steps 3 and 4 (2 s and 1 s).
    record = {"marks": [0.0, 10.0, 11.0, 13.0, 14.0], "wait": [5.0, 4.0, 0.5, 0.1, 0.9],
              "batch": [1.0, 1.0, 1.5, 0.8, 9.0], "workers": 2, "batch_size": 8, "threads": 2}
    row = bench_input_wait.summarise(record, warmup=3)
    assert row["steps_timed"] == 2
    assert row["step_s"] == pytest.approx(1.5)           # (2 + 1) / 2
    assert row["wait_s"] == pytest.approx(0.5)           # (0.1 + 0.9) / 2
    assert row["batch_s"] == pytest.approx(4.9)          # (0.8 + 9.0) / 2
    assert row["wait_share"] == pytest.approx(100 / 3)   # 1.0 s of wait in 3.0 s of steps
    assert row["images_per_s"] == pytest.approx(16 / 1.5)
    assert row["startup_s"] == 5.0 and row["max_wait_s"] == 0.9
    with pytest.raises(ValueError, match="--warmup"):
        bench_input_wait.summarise(record, warmup=5)
    with pytest.raises(ValueError, match="--warmup"):
        bench_input_wait.summarise(record, warmup=0)


def test_data_class_follows_the_config_chain():
    # kz25 sets `data:` in base/kz25.yaml (two files up), demo in base/synthetic.yaml: only the first gets
    # its val_sets emptied.
    assert (bench_input_wait.data_class(REPO / "configs/real/kz25_xcos_mobilefacenet.yaml")
            == "xcos_lightning.datamodules.FaceDataModule")
    assert (bench_input_wait.data_class(REPO / "configs/demo.yaml")
            == "xcos_lightning.datamodules.SyntheticFacesDataModule")


def test_tiny_run_reports_a_row_per_config(tmp_path):
    configs = ["configs/demo.yaml", "configs/arcface_baseline.yaml"]
    out = tmp_path / "rows.json"
    # Tiny data (64 anchors, 4 pairs per step) and no logger keep each train.py run to seconds.
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks/bench_input_wait.py"), *configs, "--steps", "2",
                           "--warmup", "1", "--keep", str(tmp_path / "runs"), "--json", str(out), "--",
                           "--data.init_args.num_train_identities", "16", "--data.init_args.images_per_identity", "4",
                           "--data.init_args.batch_size", "4", "--trainer.logger", "false"],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert [r["config"] for r in rows] == configs
    for row in rows:
        assert (row["workers"], row["batch"], row["steps_timed"], row["threads"]) == (0, 4, 2, 1)
        assert row["step_s"] > 0 and row["batch_s"] > 0 and row["wait_s"] > 0 and row["startup_s"] > 0
        assert 0 < row["wait_share"] < 100
        # the profiler's training batch lies inside the step it is part of
        assert row["batch_s"] < row["step_s"]
        assert row["images_per_s"] == pytest.approx(8 / row["step_s"])
    table = [line for line in proc.stdout.splitlines() if re.match(r"\| configs/", line)]
    assert [line.split(" | ")[0].lstrip("| ") for line in table] == configs
    # the profiler's own summary was written beside each run
    assert len(list((tmp_path / "runs").glob("*/fit-profile.txt"))) == 2
