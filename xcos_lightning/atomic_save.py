"""Write a file so that a crash at any moment leaves either the previous complete file or the new one.

The bytes go to a temporary file beside the target, which is ``fsync``ed, renamed over the target with
``os.replace`` (atomic on POSIX and Windows), and the folder is ``fsync``ed so the rename itself survives a
power cut. Needs only torch (no Lightning import), so small tools and tests can use it too.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

_TMP_SUFFIX = ".tmp"


def _fsync_dir(folder: Path) -> None:
    # The rename is durable only once the folder entry is on disk; Windows cannot open folders (no-op there).
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_files(path: str | Path) -> list[Path]:
    """Temporary files of unfinished saves of ``path`` (``.<name>.<random>.tmp`` beside it)."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}.*{_TMP_SUFFIX}"))


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)`` that leaves either the old file or the complete new one, never a partial one.

    Temporary files left by an earlier killed save of the same ``path`` are removed after the rename
    (one process writes a given checkpoint name: rank 0 under DDP).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    for stale in temp_files(path):
        stale.unlink(missing_ok=True)
