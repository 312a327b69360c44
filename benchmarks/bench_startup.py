"""Start-up time of explain.py beside ``python -c "import torch"``: what a user waits before any work starts.

Rows (each a fresh interpreter, ``--runs`` times, the table gives the median wall time and its ratio to
``import torch`` measured in the same loop, so a busy machine slows both):

- ``import torch``: the floor of every command that runs a model;
- ``explain.py --help``: lists every command without importing any (``cli/explain.py`` imports only the
  chosen command's module);
- ``explain.py <command> --help``: the parser of one command, i.e. that command's module imports
  (``verify``, ``pair`` and ``export`` import neither Lightning, albumentations nor W&B).

``python -X importtime explain.py verify --help 2> imports.txt`` names the modules behind a slow row.

    .venv/bin/python benchmarks/bench_startup.py [--runs 3] [--commands verify,pair,export,benchmark,compare]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def wall(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs of each row (default 3)")
    parser.add_argument("--commands", default="verify,pair,export", help="commands whose --help is timed")
    args = parser.parse_args()
    rows = {"import torch": [sys.executable, "-c", "import torch"],
            "explain.py --help": [sys.executable, "explain.py", "--help"]}
    for command in filter(None, args.commands.split(",")):
        rows[f"explain.py {command} --help"] = [sys.executable, "explain.py", command, "--help"]
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.runs):  # interleaved: every row sees the same load
        for name, argv in rows.items():
            times[name].append(wall(argv))
    torch_s = statistics.median(times["import torch"])
    print(f"{'command':<32} {'median s':>9} {'runs (s)':<24} {'/ import torch':>14}")
    for name, values in times.items():
        median = statistics.median(values)
        runs = " ".join(f"{v:.2f}" for v in values)
        print(f"{name:<32} {median:>9.2f} {runs:<24} {median / torch_s:>13.2f}x")


if __name__ == "__main__":
    main()
