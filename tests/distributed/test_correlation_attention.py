"""CorrelationAttention fitted under Lightning DDP on 2 CPU processes (gloo): every rank holds the same weights,
those of a single process (the pairs do not depend on the ranks; each rank scores a share, all are gathered)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

WORKER = Path(__file__).resolve().parent / "correlation_worker.py"


def _fit(out: Path, devices: int) -> Path:
    # 21 pairs: not a multiple of the ranks, so one rank's share is padded (and the padding must be left out)
    proc = subprocess.run([sys.executable, str(WORKER), "--devices", str(devices), "--fit-pairs", "21",
                           "--out", str(out)], capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-5000:]
    return out


def test_every_rank_fits_the_weights_of_one_process(tmp_path):
    two, one = _fit(tmp_path / "two", 2), _fit(tmp_path / "one", 1)
    rank0, rank1 = (torch.load(two / f"weights_rank{r}.pt") for r in (0, 1))
    single = torch.load(one / "weights_rank0.pt")
    assert torch.equal(rank0, rank1)
    assert (single - torch.full((7, 7), 1 / 49)).abs().max() > 0.005  # fitted, not uniform
    torch.testing.assert_close(rank0, single, rtol=0, atol=1e-6)  # the same pairs, summed in another order
