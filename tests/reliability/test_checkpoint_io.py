"""Checkpoints are written atomically (a kill at any point leaves the previous file) and read weights-only."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from xcos_lightning.atomic_save import atomic_torch_save, temp_files
from xcos_lightning.checkpoint_io import AtomicCheckpointIO
from xcos_lightning.errors import ModelSpecError, UnsafeFileError

# The child stalls at a chosen point of a save (half the bytes written / everything written, not yet
# renamed) and announces it with a marker file; the test then kills it with SIGKILL.
_CHILD = textwrap.dedent("""
    import io, os, sys, time
    from pathlib import Path
    import torch
    from xcos_lightning import atomic_save

    target, mode = Path(sys.argv[1]), sys.argv[2]
    real_save = torch.save

    def stall():
        Path(str(target) + ".stalled").touch()
        time.sleep(600)

    def half_save(obj, f):
        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        f.flush()
        stall()

    if mode == "mid-write":
        atomic_save.torch.save = half_save
    else:
        atomic_save.os.replace = lambda src, dst: stall()
    atomic_save.atomic_torch_save({"step": 2, "w": torch.ones(100_000)}, target)
""")


@pytest.mark.parametrize("mode", ["mid-write", "before-rename"])
def test_sigkill_during_a_save_leaves_the_previous_checkpoint(tmp_path, mode):
    target = tmp_path / "last.ckpt"
    atomic_torch_save({"step": 1, "w": torch.zeros(100_000)}, target)
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(target), mode], stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not Path(str(target) + ".stalled").exists():
            assert child.poll() is None and time.monotonic() < deadline, "the child never reached the save"
            time.sleep(0.05)
        leftovers = temp_files(target)
        assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0  # the new bytes were on their way
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    old = torch.load(target, weights_only=True)  # complete and unchanged
    assert old["step"] == 1 and torch.equal(old["w"], torch.zeros(100_000))
    atomic_torch_save({"step": 3}, target)  # the next save clears what the killed one left
    assert temp_files(target) == [] and torch.load(target, weights_only=True)["step"] == 3


def test_an_exception_mid_write_leaves_the_previous_checkpoint_and_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    atomic_torch_save({"step": 1}, target)

    def failing_save(obj, f):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        AtomicCheckpointIO().save_checkpoint({"step": 2}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True)["step"] == 1 and temp_files(target) == []


def test_lightning_resume_reads_weights_only_and_names_the_file(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "loops": Evil()}, evil)
    io = AtomicCheckpointIO()
    with pytest.raises(UnsafeFileError, match=r"evil\.ckpt: refused to load, nothing in it was run.*GLOBAL"):
        io.load_checkpoint(evil)
    assert not marker.exists()
    good = tmp_path / "good.ckpt"
    io.save_checkpoint({"global_step": 7, "w": torch.ones(3)}, good)
    assert io.load_checkpoint(good)["global_step"] == 7
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(good.read_bytes()[:-200])
    with pytest.raises(ModelSpecError, match=r"cut\.ckpt: not a readable PyTorch checkpoint.*truncated"):
        io.load_checkpoint(cut)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"\x80\x02" + os.urandom(64))
    with pytest.raises(ModelSpecError, match=r"garbage\.ckpt: not a readable"):
        io.load_checkpoint(garbage)
