"""Keep freed CPU memory in the process, so that each CPU forward pass does not page its activations in again.

PyTorch's CPU tensors come from the C library's ``malloc``. With glibc's defaults a block above the dynamic
mmap threshold is mapped and unmapped per allocation, and freed memory at the top of the heap is handed back to
the kernel once it passes the trim threshold: every forward then takes fresh pages and the kernel zeroes them on
first touch. Measured on ``explain.py verify`` of LFW (MobileFaceNet, flip TTA, warm face cache, 2-core AMD
EPYC, BENCHMARKS.md "Evaluation at the speed of the model"): 12.2 M minor page faults and 28 s of system time
per run with the defaults; 0.14 M faults and 2 s with both thresholds at 256 MiB (either one alone did
not help: 13.6 M and 65 M faults).

:func:`retain_freed_memory` sets both thresholds with glibc's documented ``mallopt``: the same as starting the
process with ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_``. The cost: up to 256 MiB of freed memory
stays resident instead of going back to the system (peak RSS of that verify: 1.32 GB either way). The kz25
training step ran about 1.3x faster with it (BENCHMARKS.md, "The CPU allocator setting in training").
"""
from __future__ import annotations

import ctypes
import os
import platform

THRESHOLD = 256 << 20  # bytes; 32 MiB (glibc's dynamic maximum) still faulted 12 M times in the run above
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")


def retain_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds to :data:`THRESHOLD` for this process and the DataLoader workers
    it forks later; True when set. Nothing is changed (False) on another C library, or when the user set
    glibc's malloc variables (``MALLOC_*_``, ``GLIBC_TUNABLES``) themselves."""
    if platform.libc_ver()[0] != "glibc" or any(name in os.environ for name in _USER_SETTINGS):
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, THRESHOLD) and libc.mallopt(_M_TRIM_THRESHOLD, THRESHOLD))
