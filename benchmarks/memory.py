"""Process memory readings for the benchmarks, from /proc (Linux; psutil is not a dependency)."""
from __future__ import annotations

import os
from pathlib import Path


def rss_mib() -> float:
    """Resident set size of this process in MiB (``/proc/self/statm``: pages)."""
    resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak_rss() -> None:
    """Set the kernel's peak-RSS mark (``VmHWM``) to the current RSS (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mib() -> float:
    """Peak resident set size (``VmHWM`` of ``/proc/self/status``) in MiB."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024
