"""Training input wait: how long each training step of a shipped config waits on its DataLoader, by Lightning's profiler.

For each config (default ``configs/demo.yaml`` and ``configs/real/kz25_xcos_mobilefacenet.yaml``) this runs
``train.py fit`` in a subprocess, as a user would, at the config's own batch size, worker count and threads,
with only these overrides: ``--trainer.max_steps`` (warm-up + timed steps, all in the first epoch),
validation off (``limit_val_batches 0``, no sanity check; a ``FaceDataModule``'s ``val_sets`` emptied, so
no LFW is read or aligned at setup), the run folder (logger, checkpoints) in a temporary folder, and
Lightning's ``SimpleProfiler`` plus :class:`StepRecorder`. Per training step it takes

- the data wait: the profiler's ``[_TrainingEpochLoop].train_dataloader_next`` (the main process blocked in
  ``next()`` on the loader; the loaders are sized, so Lightning prefetches nothing and each call is the
  wait for that step's batch);
- ``run_training_batch``: the profiler's forward, backward and optimizer step;
- the step: wall time between consecutive ``on_train_batch_end`` hooks, i.e. the whole loop iteration (data
  wait, host-to-device copy, training batch, callbacks, logging, the checkpoints the config writes).

The first ``--warmup`` steps (DataLoader workers starting, first allocations) are left out of the means;
the first batch's wait is reported apart as the start-up. Table columns: config, workers, batch (pairs;
two faces each), steps timed, mean step s, mean ``run_training_batch`` s, mean data wait s, wait share
(summed wait / summed step), images/s (faces per step / mean step), start-up s. Load averages (1, 5,
15 min) are printed before and after each run; the profiler's own summary is kept with ``--keep DIR``.

    .venv/bin/python benchmarks/bench_input_wait.py [CONFIG ...] [--steps 25] [--warmup 5] [--keep DIR] \
        [--json out.json] [-- extra train.py arguments for every run]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from lightning.pytorch.callbacks import Callback

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ("configs/demo.yaml", "configs/real/kz25_xcos_mobilefacenet.yaml")
WAIT = "[_TrainingEpochLoop].train_dataloader_next"
BATCH = "run_training_batch"


class StepRecorder(Callback):
    """Writes to ``path`` (JSON) at the end of fit: the profiler's per-call durations of the data wait and the
    training batch, the wall-clock time of every ``on_train_batch_end``, and the loader's settings as run.

    Needs ``trainer.profiler`` to be a ``SimpleProfiler`` (its ``recorded_durations``: action -> seconds per call).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.marks: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.marks.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module) -> None:
        import torch

        durations = trainer.profiler.recorded_durations
        loader = trainer.train_dataloader
        record = {"wait": list(durations[WAIT]), "batch": list(durations[BATCH]), "marks": self.marks,
                  "workers": loader.num_workers, "batch_size": loader.batch_size, "threads": torch.get_num_threads()}
        Path(self.path).write_text(json.dumps(record))


def data_class(config: Path) -> str | None:
    """``data.class_path`` of a config, following its ``config:`` chain to the file that sets it."""
    text = yaml.safe_load(config.read_text()) or {}
    data = text.get("data")
    if isinstance(data, dict) and "class_path" in data:
        return data["class_path"]
    return data_class(config.parent / text["config"]) if "config" in text else None


def summarise(record: dict, warmup: int) -> dict:
    """The table row of one run's :class:`StepRecorder` record, steps ``warmup`` onwards."""
    marks, wait, batch = record["marks"], record["wait"], record["batch"]
    steps = len(marks)
    if not 1 <= warmup < steps or len(wait) < steps or len(batch) < steps:
        raise ValueError(f"{steps} steps recorded ({len(wait)} waits, {len(batch)} batches): need more than "
                         f"--warmup {warmup} (>= 1: step i's time is marks[i] - marks[i-1])")
    step_s = [marks[i] - marks[i - 1] for i in range(warmup, steps)]
    wait_s, batch_s = wait[warmup:steps], batch[warmup:steps]
    timed = len(step_s)
    mean_step = sum(step_s) / timed
    return {"workers": record["workers"], "batch": record["batch_size"], "threads": record["threads"],
            "steps_timed": timed, "step_s": mean_step, "batch_s": sum(batch_s) / timed,
            "wait_s": sum(wait_s) / timed, "wait_share": 100 * sum(wait_s) / sum(step_s),
            "images_per_s": 2 * record["batch_size"] / mean_step, "startup_s": wait[0],
            "max_wait_s": max(wait_s)}


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def run_config(config: str, steps: int, warmup: int, folder: Path, extra: list[str]) -> dict:
    """One ``train.py fit`` of ``config`` for ``warmup + steps`` steps under the profiler; its summarised row."""
    folder.mkdir(parents=True, exist_ok=True)
    record_path = folder / "steps.json"
    args = [sys.executable, str(REPO / "train.py"), "fit", "--config", config,
            "--trainer.max_steps", str(warmup + steps), "--trainer.limit_val_batches", "0",
            "--trainer.num_sanity_val_steps", "0", "--trainer.default_root_dir", str(folder / "run"),
            "--trainer.profiler", json.dumps({"class_path": "lightning.pytorch.profilers.SimpleProfiler",
                                              "init_args": {"dirpath": str(folder), "filename": "profile"}}),
            "--trainer.callbacks+=" + json.dumps({"class_path": "bench_input_wait.StepRecorder",
                                                  "init_args": {"path": str(record_path)}})]
    if data_class(REPO / config) == "xcos_lightning.datamodules.FaceDataModule":
        args += ["--data.init_args.val_sets", "null"]
    # the child imports StepRecorder as bench_input_wait.StepRecorder
    path = [str(REPO / "benchmarks")] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    before = load()
    start = time.perf_counter()
    proc = subprocess.run(args + extra, cwd=REPO, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    if proc.returncode != 0 or not record_path.exists():
        raise SystemExit(f"{' '.join(args + extra)}\nfailed (exit {proc.returncode}):\n{proc.stdout[-3000:]}"
                         f"\n{proc.stderr[-3000:]}")
    row = summarise(json.loads(record_path.read_text()), warmup)
    return {"config": config, **row, "run_s": wall, "load_before": before, "load_after": load()}


def main(argv: list[str] | None = None) -> list[dict]:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", default=list(CONFIGS), help="configs, relative to the repository root")
    parser.add_argument("--steps", type=int, default=25, help="timed steps per config")
    parser.add_argument("--warmup", type=int, default=5, help="first steps left out of the means (>= 1)")
    parser.add_argument("--keep", type=Path, default=None, help="keep each run's folder (profiler summary) here")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)

    with tempfile.TemporaryDirectory(prefix="bench_input_wait_") as tmp:
        root = args.keep or Path(tmp)
        rows = []
        for i, config in enumerate(args.configs):
            rows.append(run_config(config, args.steps, args.warmup, root / f"{i}_{Path(config).stem}", extra))
            print(f"{config}: run {rows[-1]['run_s']:.0f} s; load average (1/5/15 min) before "
                  f"{rows[-1]['load_before']}, after {rows[-1]['load_after']}; {rows[-1]['threads']} torch threads in "
                  f"the main process; largest timed wait {rows[-1]['max_wait_s']:.4f} s", flush=True)

    print(f"\n{args.warmup} warm-up steps left out, then {args.steps} timed; {os.cpu_count()} CPUs"
          + (f"; extra arguments: {' '.join(extra)}" if extra else "") + "\n")
    print("| config | workers | batch (pairs) | steps timed | mean step s | mean run_training_batch s | "
          "mean data wait s | wait share % | images/s | start-up (first batch) s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['workers']} | {r['batch']} | {r['steps_timed']} | {r['step_s']:.3f} | "
              f"{r['batch_s']:.3f} | {r['wait_s']:.4f} | {r['wait_share']:.2f} | {r['images_per_s']:.1f} | "
              f"{r['startup_s']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
