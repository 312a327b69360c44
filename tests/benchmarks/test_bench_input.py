"""``benchmarks/bench_input.py`` on the real kz_celeb25 files: every row measured, RecordIO sets included."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_row_reports_a_rate(shared_dir):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks/bench_input.py"), "--data",
                           str(shared_dir / "data/kz_celeb25"), "--images", "8", "--rounds", "1", "--workers", "1",
                           "--batch", "4", "--consume", "1000"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rates = dict(re.findall(r"^\| ([^|]+?) \| ([\d,]+) \|", proc.stdout, flags=re.M))
    for row in ("bare decode, PIL", "bare decode, torchvision CPU", "identity folders, decode + augment",
                "RecordIO validation.rec, decode", "RecordIO testing.rec, decode + augment",
                "training pairs (identity folders), per item"):
        assert int(rates[row].replace(",", "")) > 0, (row, proc.stdout)
    assert "FaceDataModule loader, 1 workers" in proc.stdout and "not found" not in proc.stdout
