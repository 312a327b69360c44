"""Training throughput and peak memory: xCos under Lightning vs a plain PyTorch loop vs ArcFace-only, CPU, fp32.

Three variants train the same backbone (default: MobileFaceNet width 0.5 + the 32x7x7 grid head, as
``configs/demo.yaml``) on the same in-memory batches of ``--pairs`` random pairs (2 x pairs images,
112 x 112, random identity labels of ``--classes``; pixel values do not change the cost of a step),
fed through the same ``DataLoader``, fp32, gradients clipped at norm ``--clip`` (the demo's 5):

- ``lightning xcos``: ``XCosModule`` (teacher ``--teacher``, default ``self``) fitted by ``lightning.Trainer``
  (CPU, no logger, no checkpointing, no progress bar, ``max_steps``);
- ``plain xcos``: the same model and loss in a bare loop: the module's own parts (``model.grid``,
  ``head``, ``model.maps_from_grids``, ``teacher``), the optimizer of its ``configure_optimizers``
  (SGD + Adam for the attention), zero_grad / backward / clip / step;
- ``lightning arcface``: ``XCosModule(xcos=False)`` fitted by the Trainer (no attention, loss = CE).

Each round builds every variant afresh from the same seed and times steps ``warmup + 1 .. warmup +
steps``: from the end of the last warm-up batch to the end of the last batch (for Lightning: its hooks,
logging and batch fetching included; the time ``fit`` spends before the first and after the last batch
is the last column). Rounds interleave the variants, each round starting with the next one (the first
run in a process also pays one-time allocations); the table gives medians of wall and CPU seconds
(``time.process_time``: on a shared machine the wall time also counts waiting for a core). Peak RSS per
variant: ``VmHWM`` of ``/proc/self/status`` after resetting it (``/proc/self/clear_refs``). Targets:
Lightning reaches >= 0.95 of the plain loop's images/s, and xCos costs <= 15 % more CPU per image than
ArcFace-only. ``--profile`` adds one Lightning xCos fit under Lightning's ``SimpleProfiler`` (seconds
per hook and step phase), to show where the overhead goes.

    .venv/bin/python benchmarks/bench_training.py [--trunk mobilefacenet] [--width 0.5] [--pairs 32] \
        [--steps 16] [--warmup 3] [--rounds 3] [--threads 1] [--teacher self] [--profile] \
        [--baseline OLD_module.py] [--only-lightning-xcos]

Full run (about 6-7 min on the busy 2-core CPU, ~1.8 s per step of 64 images on one thread):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_training.py --threads 1 --profile
"""
from __future__ import annotations

import argparse
import importlib.util
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
import torch.nn.functional as F
from lightning.pytorch.profilers import SimpleProfiler
from torch.utils.data import DataLoader

from xcos_lightning.models import create_backbone
from xcos_lightning.models.backbone import grid_embedding
from xcos_lightning.module import XCosModule
from trunks import trunk_kwargs  # sibling script: --width per trunk
from memory import rss_mib, reset_peak_rss, peak_rss_mib  # sibling script: /proc readings

Clock = tuple[float, float]  # (wall, CPU) seconds


def clock() -> Clock:
    return time.perf_counter(), time.process_time()


def since(start: Clock, end: Clock) -> Clock:
    return end[0] - start[0], end[1] - start[1]


def make_module(args: argparse.Namespace, xcos: bool, cls: type = XCosModule) -> XCosModule:
    torch.manual_seed(0)  # every variant and round starts from the same weights
    backbone = create_backbone(args.trunk, grid_channels=32, **trunk_kwargs(args.trunk, args.width))
    return cls(backbone, num_classes=args.classes, xcos=xcos, teacher=args.teacher)


def load_baseline(path: str) -> type:
    """``XCosModule`` of another version of ``module.py`` (e.g. ``git show REV:xcos_lightning/module.py``)."""
    spec = importlib.util.spec_from_file_location("baseline_module", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.XCosModule


def make_loader(args: argparse.Namespace) -> DataLoader:
    """One epoch of ``warmup + steps`` ready batches (4 distinct ones, repeated): no epoch boundary is timed."""
    g = torch.Generator().manual_seed(0)
    n, c = args.pairs, args.classes
    distinct = [{"img_a": torch.rand(n, 3, 112, 112, generator=g), "img_b": torch.rand(n, 3, 112, 112, generator=g),
                 "label_a": torch.randint(0, c, (n,), generator=g), "label_b": torch.randint(0, c, (n,), generator=g)}
                for _ in range(4)]
    batches = [distinct[i % 4] for i in range(args.warmup + args.steps)]
    return DataLoader(batches, batch_size=None)  # items are whole batches


class StepWindow(L.Callback):
    """Clocks at the end of batch ``warmup - 1`` and of the last batch, and at the start and end of training."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.first = self.last = self.train_start = self.train_end = (0.0, 0.0)

    def on_train_start(self, trainer, pl_module) -> None:
        self.train_start = clock()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.last = clock()
        if batch_idx == self.warmup - 1:
            self.first = self.last

    def on_train_end(self, trainer, pl_module) -> None:
        self.train_end = clock()


def run_lightning(module: XCosModule, loader: DataLoader, args: argparse.Namespace,
                  profiler: SimpleProfiler | None = None) -> tuple[Clock, float]:
    """((wall, CPU) seconds of the timed steps, wall seconds of ``fit`` outside the training batches)."""
    window = StepWindow(args.warmup)
    with tempfile.TemporaryDirectory() as root:
        trainer = L.Trainer(accelerator="cpu", devices=1, precision="32-true", max_steps=args.warmup + args.steps,
                            logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, gradient_clip_val=args.clip or None, callbacks=[window],
                            profiler=profiler, default_root_dir=root)
        start = clock()
        trainer.fit(module, train_dataloaders=loader)
        end = clock()
    outside = (window.train_start[0] - start[0]) + (end[0] - window.train_end[0])
    return since(window.first, window.last), outside


def run_plain(module: XCosModule, loader: DataLoader, args: argparse.Namespace) -> Clock:
    """The xCos training step of ``XCosModule.training_step`` without Lightning (and without its checks)."""
    optimizer = module.configure_optimizers()["optimizer"]
    params = [p for group in optimizer.param_groups for p in group["params"]]
    lam = module.hparams.lambda_ce
    module.train()
    first = clock()
    for i, batch in enumerate(loader):
        img_a, img_b = batch["img_a"], batch["img_b"]
        labels = torch.cat([batch["label_a"], batch["label_b"]])
        grids = module.model.grid(torch.cat([img_a, img_b]))
        emb = grid_embedding(grids)
        ce = F.cross_entropy(module.head(emb, labels), labels)
        _, _, xcos = module.model.maps_from_grids(*grids.chunk(2))
        if module.teacher is not None:
            target = module.teacher.pair_cosine(img_a, img_b)
        else:
            target = F.cosine_similarity(*emb.detach().chunk(2), dim=1)
        loss = lam * ce + (1 - lam) * F.mse_loss(xcos, target)
        optimizer.zero_grad()
        loss.backward()
        if args.clip:
            torch.nn.utils.clip_grad_norm_(params, args.clip)
        optimizer.step()
        if i == args.warmup - 1:
            first = clock()
    return since(first, clock())


def is_minor(line: str) -> bool:
    """A row of a ``SimpleProfiler`` report whose share (last column, %) is below 0.1."""
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    try:
        return len(cells) == 5 and float(cells[4]) < 0.1
    except ValueError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trunk", default="mobilefacenet", help="registered trunk (create_backbone)")
    parser.add_argument("--width", type=float, default=0.5, help="MobileFaceNet width_mult; IResNet width / 64")
    parser.add_argument("--pairs", type=int, default=32, help="pairs per batch (2x images)")
    parser.add_argument("--classes", type=int, default=200, help="training identities of the margin head")
    parser.add_argument("--teacher", default="self", help="'self' or a model SPEC (e.g. mobilefacenet:PATH)")
    parser.add_argument("--clip", type=float, default=5.0, help="gradient clipping norm (0: none)")
    parser.add_argument("--steps", type=int, default=16, help="timed steps per variant and round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before them (>= 1)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions of every variant")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="one more Lightning xCos fit under SimpleProfiler")
    parser.add_argument("--baseline", help="another module.py: its XCosModule joins the rounds as 'baseline xcos'")
    parser.add_argument("--only-lightning-xcos", action="store_true", help="leave out the plain and ArcFace variants")
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be >= 1")
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no "GPU available: ..." banners per fit
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")  # in-memory batches: none needed
    warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")  # training throughput only

    loader = make_loader(args)
    images = 2 * args.pairs
    variants: dict[str, Callable[[], tuple[Clock, float | None]]] = {
        "lightning xcos": lambda: run_lightning(make_module(args, True), loader, args),
        "plain xcos": lambda: (run_plain(make_module(args, True), loader, args), None),
        "lightning arcface": lambda: run_lightning(make_module(args, False), loader, args),
    }
    if args.only_lightning_xcos:
        variants = {"lightning xcos": variants["lightning xcos"]}
    if args.baseline:
        baseline = load_baseline(args.baseline)
        variants["baseline xcos"] = lambda: run_lightning(make_module(args, True, baseline), loader, args)
    print(f"trunk {args.trunk} {trunk_kwargs(args.trunk, args.width)} + grid head 32x7x7, {args.pairs} pairs = "
          f"{images} images of 112x112 per step, {args.classes} classes, teacher {args.teacher}, fp32, clip "
          f"{args.clip or 'off'}; {args.warmup} warm-up + {args.steps} timed steps; torch {torch.__version__}, "
          f"lightning {L.__version__}, threads={torch.get_num_threads()}; load average at start: "
          f"{os.getloadavg()[0]:.1f}")

    walls: dict[str, list[float]] = {k: [] for k in variants}
    cpus: dict[str, list[float]] = {k: [] for k in variants}
    outside: dict[str, list[float]] = {k: [] for k in variants}
    peak: dict[str, float] = {}
    growth: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for r in range(args.rounds):
        # Each round starts with another variant: the process's first run also pays one-time allocations.
        for name in names[r % len(names):] + names[:r % len(names)]:
            run = variants[name]
            before = rss_mib()
            reset_peak_rss()
            (wall, cpu), fit_outside = run()
            walls[name].append(wall / args.steps)
            cpus[name].append(cpu / args.steps)
            if fit_outside is not None:
                outside[name].append(fit_outside)
            peak[name] = max(peak.get(name, 0.0), peak_rss_mib())
            growth[name].append(peak_rss_mib() - before)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {walls[k][-1]:.2f}" for k in variants)
              + f" wall s/step; load average {os.getloadavg()[0]:.1f}", flush=True)

    wall = {k: statistics.median(v) for k, v in walls.items()}
    cpu = {k: statistics.median(v) for k, v in cpus.items()}
    print(f"\nmedians of {args.rounds} interleaved rounds\n")
    print("| variant | wall s / step | CPU s / step | images/s (wall) | images/s (CPU) | CPU ms / image "
          "| peak RSS MiB (max) | peak RSS growth MiB (median) | fit() outside the batches, wall s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in variants:
        fit_outside = f"{statistics.median(outside[name]):.2f}" if outside[name] else "-"
        print(f"| {name} | {wall[name]:.3f} | {cpu[name]:.3f} | {images / wall[name]:.1f} | {images / cpu[name]:.1f} "
              f"| {1000 * cpu[name] / images:.1f} | {peak[name]:.0f} | {statistics.median(growth[name]):+.0f} "
              f"| {fit_outside} |")
    light, plain, arc = "lightning xcos", "plain xcos", "lightning arcface"
    if args.baseline:
        print(f"\nthis module / baseline images/s: {wall['baseline xcos'] / wall[light]:.3f} (wall), "
              f"{cpu['baseline xcos'] / cpu[light]:.3f} (CPU); target >= 1")
    if args.only_lightning_xcos:
        return
    print(f"\nLightning / plain images/s: {wall[plain] / wall[light]:.3f} (wall), {cpu[plain] / cpu[light]:.3f} (CPU); "
          "target >= 0.95")
    print(f"xCos vs ArcFace-only per image (Lightning): {100 * (wall[light] / wall[arc] - 1):+.1f} % (wall), "
          f"{100 * (cpu[light] / cpu[arc] - 1):+.1f} % (CPU); target <= +15 %")

    if args.profile:
        with tempfile.TemporaryDirectory() as folder:
            profiler = SimpleProfiler(dirpath=folder, filename="profile", extended=True)
            run_lightning(make_module(args, True), loader, args, profiler)
            report = next(Path(folder).glob("*profile*.txt")).read_text().splitlines()
        print(f"\nLightning xCos fit under SimpleProfiler ({args.warmup + args.steps} steps, warm-up included; "
              "actions under 0.1 % left out):\n")
        print("\n".join(line for line in report if not is_minor(line)))


if __name__ == "__main__":
    main()
