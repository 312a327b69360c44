"""A rank that raises stops every rank within seconds, naming it and its error; the run resumes from
``last.ckpt`` (2 CPU processes, gloo, ``RankFailureMonitor`` in ``train_worker.py``)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import torch

WORKER = Path(__file__).resolve().parent / "train_worker.py"


def _run(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(WORKER), "--head", "partial", "--devices", "2", "--steps", "8",
                           "--out", str(out), *extra], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/status").is_file() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


def test_rank_one_raising_ends_both_ranks_naming_it_and_the_run_resumes(tmp_path):
    proc = _run(tmp_path, "--fail", "1", "5")
    ended = time.time()
    assert proc.returncode != 0
    assert ended - float((tmp_path / "failed_at").read_text()) < 60
    assert not any(_alive(int((tmp_path / f"pid{r}").read_text())) for r in (0, 1))
    log = proc.stdout + proc.stderr
    # rank 0 names rank 1, its step and its error (not only gloo's "Connection closed by peer")
    assert "rank 0 stopped because rank 1 failed at global step 5: RuntimeError: injected failure on rank 1" in log
    ckpt = tmp_path / "checkpoints/last.ckpt"
    assert torch.load(ckpt, weights_only=True)["global_step"] == 4  # the last save before the failure

    resumed = _run(tmp_path / "resumed", "--ckpt", str(ckpt))
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    losses = torch.load(tmp_path / "resumed/losses.pt", weights_only=False)
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))  # steps 5..8
    assert torch.load(tmp_path / "resumed/head_end.pt", weights_only=False)["step"] == 8


def test_rank_one_killed_ends_rank_zero_too(tmp_path):
    # SIGKILL: rank 1 writes no report, so only the collectives can notice (gloo: its socket closes)
    proc = _run(tmp_path, "--fail", "1", "5", "--kill")
    ended = time.time()
    assert proc.returncode != 0
    assert ended - float((tmp_path / "failed_at").read_text()) < 60
    assert not any(_alive(int((tmp_path / f"pid{r}").read_text())) for r in (0, 1))
    # whichever comes first: rank 0's collective fails (gloo: "Connection closed by peer" or "Connection reset
    # by peer"), or Lightning's launcher sees its child die and kills the other processes
    log = proc.stdout + proc.stderr
    assert "by peer" in log or "terminated with code -9. Forcefully terminating all other processes" in log
