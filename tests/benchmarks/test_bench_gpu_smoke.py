"""``benchmarks/bench_gpu.py --device cpu --smoke``: every section runs end to end and reports every row."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TRAINING_ROWS = {"bare floor, contiguous (NCHW)", "bare floor, channels-last", "bare floor, channels-last + compile",
                 "bare xCos, channels-last", "Lightning xCos, as shipped", "Lightning ArcFace-only, as shipped"}


def test_smoke_run_reports_every_row(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks/bench_gpu.py"), "--device", "cpu", "--smoke",
                           "--json", str(out)], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for heading in ("### Training step", "### Verification", "### Explanation"):
        assert heading in proc.stdout
    # The compile switch ran and reported its time (eager backend on the CPU).
    assert "bare floor: compiled trunk (train) in " in proc.stdout and "; eager)" in proc.stdout

    results = json.loads(out.read_text())
    assert set(results["training"]) == TRAINING_ROWS
    for row in results["training"].values():
        assert 0 < row["s_per_step"] < 60 and row["peak_gib"] > 0
    assert results["training"]["Lightning xCos, as shipped"]["channels_last"] == 0.0  # auto: off on the CPU
    verify = results["verification"]["tiny"]
    assert all(0 < verify[k] < 10 for k in ("bare_s_per_pair", "verify_s_per_pair"))
    explain = results["explanation"]["tiny"]
    assert set(explain) == {"xcos", "xssab", "gradcam", "corrrise", "forward_s_per_image"}
    assert all(math.isfinite(v) and v > 0 for v in explain.values())
