"""Cost of the explanation monitor per run and of the faithfulness metrics per pair, next to one demo epoch, CPU.

One process, one model. ``configs/demo.yaml``'s model and data are built by the project's LightningCLI
(so this follows the config; further ``--key value`` arguments override it as on ``train.py``'s command
line, e.g. ``--data.init_args.val_pairs 200``) and trained for one epoch by a Trainer with the config's
precision and gradient clipping (no logger, no checkpoints, no sanity check), then validated (the
monitor needs this run's EER thresholds), then ``ExplanationMonitor`` runs at its defaults, as in the
demo config (5 methods, deletion/insertion, 12 pairs, 64 masks; ``--n-pairs`` / ``--n-masks`` for quick
runs). Callbacks around the monitor clock each phase (wall, and CPU of this process:
``time.process_time``) and its peak RSS growth (``VmHWM`` of ``/proc/self/status`` reset at the phase's
start through ``/proc/self/clear_refs``). The monitor's share is given against the training epoch alone
and as the monitor logs it (``explain/cost/epoch_share``: epoch start to monitor end, validation included).

Then, on the trained model and the first ``--pairs`` validation pairs, one pair at a time (as the monitor does),
each faithfulness metric of ``xcos_lightning.metrics`` on the maps of ``--map-method`` (not timed),
measured through a BatchNorm-folded channels-last inference copy as the monitor measures, at the
monitor's (and the benchmark's) settings: deletion/insertion (``pair_perturbation_scores``, 20 steps,
image A; 10 steps before issue 17), S-RISE flip fractions (``flip_fractions``, 20 steps + bisection) and
DPR (``dpr_scores``, 20 steps, on A with 27 16-px patches of B pasted in, explained again as the protocol
wants) at the epoch's EER threshold.

    .venv/bin/python benchmarks/bench_monitor.py [--threads 1] [--pairs 6] [--map-method xssab] [CONFIG OVERRIDES]

Full run (the demo epoch and the monitor at its defaults; about 3-4 min on the busy 2-core CPU):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_monitor.py --threads 1
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import lightning as L
import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor

from xcos_lightning.callbacks import ExplanationMonitor
from xcos_lightning.cli.train import XCosCLI
from xcos_lightning.datamodules.patched_pairs import patch_mask, patch_positions
from xcos_lightning.models.fusion import inference_copy
from xcos_lightning.explain.registry import build_explainer
from xcos_lightning.metrics import dpr_scores, flip_fractions, pair_perturbation_scores, tie_seeds
from xcos_lightning.module import XCosModule
from memory import rss_mib, reset_peak_rss, peak_rss_mib  # sibling script: /proc readings

REPO = Path(__file__).resolve().parents[1]
Clock = tuple[float, float]  # (wall, CPU) seconds


def clock() -> Clock:
    return time.perf_counter(), time.process_time()


class Phases:
    """Phase boundaries: each ``start`` closes the open phase (wall s, CPU s, peak RSS growth MiB)."""

    def __init__(self) -> None:
        self.results: dict[str, tuple[float, float, float]] = {}
        self._open: tuple[str, Clock, float] | None = None

    def start(self, name: str | None) -> None:
        now = clock()
        if self._open is not None:
            label, then, rss = self._open
            self.results[label] = (now[0] - then[0], now[1] - then[1], peak_rss_mib() - rss)
        self._open = None
        if name is not None:
            rss = rss_mib()
            reset_peak_rss()
            self._open = (name, clock(), rss)


class BeforeMonitor(L.Callback):
    def __init__(self, phases: Phases) -> None:
        self.phases = phases

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.phases.start("training epoch")

    def on_validation_start(self, trainer, pl_module) -> None:
        self.phases.start("validation")

    def on_validation_end(self, trainer, pl_module) -> None:  # runs just before the monitor's
        self.phases.start("monitor run")


class AfterMonitor(L.Callback):
    def __init__(self, phases: Phases) -> None:
        self.phases = phases

    def on_validation_end(self, trainer, pl_module) -> None:
        self.phases.start(None)


def patched_copy(img_a: Tensor, img_b: Tensor, seed: int) -> Tensor:
    """A with 27 16-px squares of B pasted in at seeded positions (the DPR impostor recipe, one pair)."""
    mask = patch_mask(patch_positions(1, img_a.shape[-1], seed=seed)[0], img_a.shape[-1])
    return torch.where(mask, img_b, img_a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs/demo.yaml")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit-train-batches", type=float, default=1.0, help="Trainer's (quick runs: e.g. 3)")
    parser.add_argument("--n-pairs", type=int, default=None, help="monitor n_pairs (default: its 12)")
    parser.add_argument("--n-masks", type=int, default=None, help="monitor n_masks (default: its 64)")
    parser.add_argument("--pairs", type=int, default=6, help="validation pairs of the per-metric timing")
    parser.add_argument("--map-method", default="xssab", help="explainer whose maps the metrics score")
    args, overrides = parser.parse_known_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no banners
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")  # the demo config's choice
    warnings.filterwarnings("ignore", message=".*args parameter is intended.*")  # our own options are in sys.argv

    folder = tempfile.TemporaryDirectory(prefix="bench_monitor_")  # runs/ stays untouched (monitor's metrics.jsonl)
    root = folder.name
    cli = XCosCLI(XCosModule, LightningDataModule, subclass_mode_data=True, save_config_callback=None, run=False,
                  auto_configure_optimizers=False,
                  args=["--config", str(args.config), "--trainer.logger=false", "--trainer.callbacks=[]",
                        f"--trainer.default_root_dir={root}", *overrides])
    config = cli.config.trainer
    monitor_args = {k: v for k, v in (("n_pairs", args.n_pairs), ("n_masks", args.n_masks)) if v is not None}
    monitor = ExplanationMonitor(**monitor_args)
    phases = Phases()
    limit = int(args.limit_train_batches) if args.limit_train_batches > 1 else args.limit_train_batches
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, precision=config.precision,
                        gradient_clip_val=config.gradient_clip_val, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_train_batches=limit, callbacks=[BeforeMonitor(phases), monitor, AfterMonitor(phases)],
                        default_root_dir=root)
    print(f"config {args.config.name} {' '.join(overrides)}; monitor {monitor_args or 'at its defaults'} (methods "
          f"{monitor.methods}, {monitor.n_pairs} pairs, {monitor.n_masks} masks); torch {torch.__version__}, "
          f"threads={torch.get_num_threads()}; load average at start: {os.getloadavg()[0]:.1f}", flush=True)
    trainer.fit(cli.model, datamodule=cli.datamodule)
    steps = trainer.num_training_batches
    scalars = monitor.last_scalars
    loaders = trainer.val_dataloaders
    dataset = (loaders[0] if isinstance(loaders, (list, tuple)) else loaders).dataset  # the monitor's set

    print(f"\none epoch: {steps} training steps, validation on {len(dataset)} pairs "
          f"(flip TTA), then the monitor on {int(scalars['explain/cost/pairs'])} pairs; load average "
          f"{os.getloadavg()[0]:.1f}\n")
    print("| phase | wall s | CPU s | peak RSS growth MiB |\n|---|---|---|---|")
    for name, (wall, cpu, grown) in phases.results.items():
        print(f"| {name} | {wall:.1f} | {cpu:.1f} | {grown:+.0f} |")
    train, run = phases.results["training epoch"], phases.results["monitor run"]
    print(f"\nmonitor run / training epoch: {100 * run[0] / train[0]:.1f} % (wall), {100 * run[1] / train[1]:.1f} % "
          f"(CPU); as logged (explain/cost/epoch_share, validation included): "
          f"{100 * scalars['explain/cost/epoch_share']:.1f} %; peak RSS of the process {peak_rss_mib():.0f} MiB")
    print("explainer seconds per pair in the monitor: " + ", ".join(
        f"{m} {scalars[f'explain/{m}/seconds_per_pair']:.2f}" for m in monitor.methods
        if f"explain/{m}/seconds_per_pair" in scalars))

    model = cli.model.model.eval()
    set_name = (getattr(cli.datamodule, "val_set_names", None) or ["val"])[0]
    threshold = float(trainer.callback_metrics[f"val/{set_name}/eer_threshold_cos"])
    fast = inference_copy(model, channels_last=True)

    def embed(x: Tensor) -> Tensor:
        return fast(x.contiguous(memory_format=torch.channels_last)).float()

    explainer = build_explainer(args.map_method, model, threshold=threshold)
    metrics: dict[str, Callable[[dict], object]] = {
        "deletion/insertion (20 steps, A)": lambda p: pair_perturbation_scores(
            embed, p["img_a"], p["img_b"], p["explanation"], p["label"], 20, seeds=p["seeds"]),
        "flip fractions (20 steps + bisection)": lambda p: flip_fractions(
            embed, p["img_a"], p["img_b"], *p["explanation"].order_keys("a"), threshold, 20, seeds=p["seeds"]),
        "DPR (20 steps)": lambda p: dpr_scores(
            embed, p["patched_a"], p["img_a"], p["img_b"], *p["patched"].order_keys("a"), threshold, 20,
            seeds=p["seeds"]),
    }
    walls: dict[str, list[float]] = {k: [] for k in metrics}
    cpus: dict[str, list[float]] = {k: [] for k in metrics}
    grown: dict[str, float] = {}
    for i in range(args.pairs):
        item = dataset[i]
        pair = {"img_a": item["img_a"][None], "img_b": item["img_b"][None],
                "label": torch.tensor([bool(item["label"])]), "seeds": tie_seeds(0, torch.tensor([i]))}
        pair["patched_a"] = patched_copy(pair["img_a"], pair["img_b"], seed=i)
        pair["explanation"] = explainer(pair["img_a"], pair["img_b"])
        pair["patched"] = explainer(pair["patched_a"], pair["img_b"])
        for name, metric in metrics.items():
            before = rss_mib()
            reset_peak_rss()
            start = clock()
            metric(pair)
            end = clock()
            walls[name].append(end[0] - start[0])
            cpus[name].append(end[1] - start[1])
            grown[name] = max(grown.get(name, 0.0), peak_rss_mib() - before)
    print(f"\nfaithfulness metrics per pair on {args.map_method} maps, medians of {args.pairs} validation pairs, "
          f"threshold {threshold:.3f}\n")
    print("| metric | wall s / pair | CPU s / pair | x one training step (CPU) | peak RSS growth MiB |")
    print("|---|---|---|---|---|")
    for name in metrics:
        cpu = statistics.median(cpus[name])
        print(f"| {name} | {statistics.median(walls[name]):.3f} | {cpu:.3f} | {cpu / (train[1] / steps):.2f} "
              f"| {grown[name]:+.0f} |")
    folder.cleanup()


if __name__ == "__main__":
    main()
