"""Training throughput and peak memory: xCos under Lightning vs a plain PyTorch loop vs ArcFace-only, CPU, fp32.

Three variants train the same model on the same in-memory batches, fed through the same ``DataLoader``:

- ``lightning xcos``: ``XCosModule`` fitted by ``lightning.Trainer`` (CPU, no logger, no checkpointing, no
  progress bar, no validation, ``max_steps``);
- ``plain xcos``: the same model and loss in a bare loop: the module's own parts (``model.grid``,
  ``head``, ``model.maps_from_grids``, ``teacher``), the optimizer of its ``configure_optimizers``
  (SGD + Adam for the attention), zero_grad / backward / clip / step;
- ``lightning arcface``: ``XCosModule(xcos=False)`` fitted by the Trainer (no attention, loss = CE).

The model and batches come from flags (default: MobileFaceNet width 0.5 + the 32x7x7 grid head, as
``configs/demo.yaml``; ``--pairs`` random pairs, 2 x pairs images of 112 x 112, random labels of
``--classes``; pixel values do not change the cost of a step; fp32, clipping at ``--clip``) or, with
``--config``, from a ``train.py`` config file as ``train.py fit`` builds them (its ``XCosCLI``): the model,
its teacher and pretrained weights, the Trainer's step settings (precision, gradient clipping,
``accumulate_grad_batches``, ``log_every_n_steps``) and the first 4 training batches of its data module
(its batch size, labels and augmentation; validation sets left out, so no LFW is read or aligned).

``--baseline-tree DIR`` adds ``baseline xcos``: the same Lightning fit run by another checkout's
``xcos_lightning`` (``git worktree add DIR REV``: every file of that revision, not only ``module.py``).
Then ``lightning xcos`` and ``baseline xcos`` each run in a fresh process of this script per round
(``PYTHONPATH`` and working directory = their checkout, so a config's relative paths resolve in it; each
prints the ``xcos_lightning`` it imported), so both sides pay the same start-up.

Each round builds every variant afresh from the same seed and times steps ``warmup + 1 .. warmup +
steps``: from the end of the last warm-up batch to the end of the last batch (for Lightning: its hooks,
logging and batch fetching included; the time ``fit`` spends before the first and after the last batch
is the last column). Rounds interleave the variants, each round starting with the next one (the first
run in a process also pays one-time allocations); the table gives medians of wall and CPU seconds
(``time.process_time``: on a shared machine the wall time also counts waiting for a core). Peak RSS per
variant: ``VmHWM`` of ``/proc/self/status`` after resetting it (``/proc/self/clear_refs``). Targets:
Lightning reaches >= 0.95 of the plain loop's images/s, xCos costs <= 15 % more CPU per image than
ArcFace-only, and this checkout's images/s >= the baseline's. ``--profile`` adds one Lightning xCos fit
under Lightning's ``SimpleProfiler`` (seconds per hook and step phase), to show where the overhead goes.

    .venv/bin/python benchmarks/bench_training.py [--config FILE | --trunk mobilefacenet --width 0.5 \
        --pairs 32 --classes 200 --teacher self --clip 5] [--steps 16] [--warmup 3] [--rounds 3] \
        [--threads 1] [--profile] [--baseline-tree DIR] [--only-lightning-xcos]

Full run (about 6-7 min on the busy 2-core CPU, ~1.8 s per step of 64 images on one thread):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_training.py --threads 1 --profile

This checkout against the one before a change, on the kz25 config (run from the repository root):

    git worktree add /tmp/before REV && ln -sfn "$PWD/../shared" /tmp/shared   # ../shared of the worktree
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_training.py --threads 1 --only-lightning-xcos \
        --config configs/real/kz25_xcos_mobilefacenet.yaml --baseline-tree /tmp/before --steps 6 --warmup 2
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Callable

import lightning as L
import torch
import torch.nn.functional as F
import xcos_lightning
from lightning.pytorch import LightningDataModule
from lightning.pytorch.profilers import SimpleProfiler
from torch.utils.data import DataLoader

from xcos_lightning.cli.train import XCosCLI
from xcos_lightning.models import create_backbone
from xcos_lightning.models.backbone import grid_embedding
from xcos_lightning.module import XCosModule
from bench_input_wait import data_class  # sibling script: a config's data module class
from trunks import trunk_kwargs  # sibling script: --width per trunk
from memory import rss_mib, reset_peak_rss, peak_rss_mib  # sibling script: /proc readings

REPO = Path(__file__).resolve().parents[1]
Clock = tuple[float, float]  # (wall, CPU) seconds
# The Trainer arguments of a config that change what a training step does.
STEP_SETTINGS = ("precision", "gradient_clip_val", "gradient_clip_algorithm", "accumulate_grad_batches",
                 "log_every_n_steps")


def clock() -> Clock:
    return time.perf_counter(), time.process_time()


def since(start: Clock, end: Clock) -> Clock:
    return end[0] - start[0], end[1] - start[1]


@dataclass
class Setup:
    """What every variant trains: ``build(xcos)`` -> a fresh module (same seed each call), the batches, and the
    keyword arguments of ``lightning.Trainer`` that shape the step."""
    build: Callable[[bool], XCosModule]
    loader: DataLoader
    trainer: dict
    text: str  # one line saying what is trained


@dataclass
class Result:
    """One variant's run: median-able seconds per timed step, fit's time outside them, RSS in MiB."""
    wall: float
    cpu: float
    outside: float | None
    peak: float
    growth: float


def repeated(batches: list[dict], args: argparse.Namespace) -> DataLoader:
    """One epoch of ``warmup + steps`` ready batches (the given ones, repeated): no epoch boundary is timed."""
    return DataLoader([batches[i % len(batches)] for i in range(args.warmup + args.steps)], batch_size=None)


def flag_setup(args: argparse.Namespace) -> Setup:
    """The model of ``--trunk``/``--width`` and 4 distinct random batches of ``--pairs`` pairs."""
    g = torch.Generator().manual_seed(0)
    n, c = args.pairs, args.classes
    distinct = [{"img_a": torch.rand(n, 3, 112, 112, generator=g), "img_b": torch.rand(n, 3, 112, 112, generator=g),
                 "label_a": torch.randint(0, c, (n,), generator=g), "label_b": torch.randint(0, c, (n,), generator=g)}
                for _ in range(4)]

    def build(xcos: bool) -> XCosModule:
        torch.manual_seed(0)  # every variant and round starts from the same weights
        backbone = create_backbone(args.trunk, grid_channels=32, **trunk_kwargs(args.trunk, args.width))
        return XCosModule(backbone, num_classes=c, xcos=xcos, teacher=args.teacher)

    text = (f"trunk {args.trunk} {trunk_kwargs(args.trunk, args.width)} + grid head 32x7x7, {n} pairs = {2 * n} "
            f"images of 112x112 per step, {c} classes, teacher {args.teacher}, fp32, clip {args.clip or 'off'}")
    return Setup(build, repeated(distinct, args), {"precision": "32-true", "gradient_clip_val": args.clip or None},
                 text)


def config_cli(config: str, xcos: bool, root: str) -> XCosCLI:
    """``train.py fit --config config`` parsed and instantiated, without running: no logger, no callbacks, no
    validation sets, the run folder ``root``; ``xcos=False`` turns the config's model into ArcFace-only."""
    args = ["--config", config, "--trainer.logger", "false", "--trainer.callbacks", "null",
            "--trainer.default_root_dir", root] + ([] if xcos else ["--model.xcos", "false"])
    if data_class(Path(config)) == "xcos_lightning.datamodules.FaceDataModule":
        args += ["--data.init_args.val_sets", "null"]
    # as xcos_lightning.cli.train.run builds it, with run=False and no config saved
    return XCosCLI(XCosModule, LightningDataModule, subclass_mode_data=True, auto_configure_optimizers=False,
                   save_config_callback=None, run=False, args=args)


def config_setup(args: argparse.Namespace, root: str) -> Setup:
    """The model, step settings and first 4 training batches of ``--config``."""
    cli = config_cli(args.config, True, root)
    data: LightningDataModule = cli.datamodule
    data.prepare_data()
    data.setup("fit")
    batches = list(islice(iter(data.train_dataloader()), 4))
    trainer = {k: cli.config["trainer"][k] for k in STEP_SETTINGS if cli.config["trainer"].get(k) is not None}
    module = cli.model
    pairs = batches[0]["img_a"].shape[0]
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    total = sum(p.numel() for p in module.parameters())
    text = (f"{args.config}: {trainable / 1e6:.2f} M of the module's {total / 1e6:.2f} M parameters (teacher "
            f"included) trained, {module.hparams.num_classes} "
            f"classes, teacher {module.hparams.teacher}, {pairs} pairs = {2 * pairs} images per step from "
            f"{type(data).__name__}; trainer {trainer}")
    return Setup(lambda xcos: config_cli(args.config, xcos, root).model, repeated(batches, args), trainer, text)


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


def run_lightning(module: XCosModule, setup: Setup, args: argparse.Namespace,
                  profiler: SimpleProfiler | None = None) -> tuple[Clock, float]:
    """((wall, CPU) seconds of the timed steps, wall seconds of ``fit`` outside the training batches)."""
    window = StepWindow(args.warmup)
    with tempfile.TemporaryDirectory() as root:
        trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=args.warmup + args.steps, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            limit_val_batches=0, callbacks=[window], profiler=profiler, default_root_dir=root,
                            **setup.trainer)
        start = clock()
        trainer.fit(module, train_dataloaders=setup.loader)
        end = clock()
    outside = (window.train_start[0] - start[0]) + (end[0] - window.train_end[0])
    return since(window.first, window.last), outside


def run_plain(module: XCosModule, setup: Setup, args: argparse.Namespace) -> Clock:
    """The xCos training step of ``XCosModule.training_step`` without Lightning (and without its checks)."""
    optimizer = module.configure_optimizers()["optimizer"]
    params = [p for group in optimizer.param_groups for p in group["params"]]
    lam = module.hparams.lambda_ce
    clip = setup.trainer.get("gradient_clip_val")
    module.train()
    first = clock()
    for i, batch in enumerate(setup.loader):
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
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        if i == args.warmup - 1:
            first = clock()
    return since(first, clock())


def measure(run: Callable[[], tuple[Clock, float | None]], steps: int) -> Result:
    """Run one variant once, with its peak RSS."""
    before = rss_mib()
    reset_peak_rss()
    (wall, cpu), outside = run()
    return Result(wall / steps, cpu / steps, outside, peak_rss_mib(), peak_rss_mib() - before)


def run_in_tree(tree: Path, argv: list[str]) -> Result:
    """This script's ``lightning xcos`` variant, once, in a fresh process on ``tree``'s ``xcos_lightning``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv, "--worker"], cwd=tree, env=env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    last = proc.stdout.strip().splitlines()[-1:] if proc.returncode == 0 else []
    if not last or not last[0].startswith("{"):
        raise SystemExit(f"the run on {tree} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n"
                         f"{proc.stderr[-3000:]}")
    record = json.loads(last[0])
    imported = Path(record.pop("xcos_lightning")).resolve()
    if not imported.is_relative_to(tree.resolve()):
        raise SystemExit(f"the run on {tree} imported {imported}, not its own xcos_lightning")
    return Result(**record)


def without_option(argv: list[str], name: str) -> list[str]:
    """``argv`` less the option ``name`` and its value (``name VALUE`` or ``name=VALUE``)."""
    kept, skip = [], False
    for arg in argv:
        if not skip and arg != name and not arg.startswith(name + "="):
            kept.append(arg)
        skip = arg == name
    return kept


def is_minor(line: str) -> bool:
    """A row of a ``SimpleProfiler`` report whose share (last column, %) is below 0.1."""
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    try:
        return len(cells) == 5 and float(cells[4]) < 0.1
    except ValueError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="a train.py config (relative to the repository root): its model, "
                        "batches and step settings replace the five flags below")
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
    parser.add_argument("--baseline-tree", type=Path, help="another checkout (git worktree add DIR REV): its "
                        "xcos_lightning joins the rounds as 'baseline xcos'")
    parser.add_argument("--only-lightning-xcos", action="store_true", help="leave out the plain and ArcFace variants")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one run_in_tree run
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be >= 1")
    if args.baseline_tree and not (args.baseline_tree / "xcos_lightning" / "module.py").is_file():
        parser.error(f"--baseline-tree {args.baseline_tree}: no xcos_lightning/module.py there")
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no "GPU available: ..." banners per fit
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)  # nor "Seed set to 0" per config parse
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")  # in-memory batches: none needed
    warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")  # training throughput only
    warnings.filterwarnings("ignore", message=".*both args and command line.*")  # config_cli passes its own args

    with tempfile.TemporaryDirectory() as root:
        setup = config_setup(args, root) if args.config else flag_setup(args)
        if args.worker:
            result = measure(lambda: run_lightning(setup.build(True), setup, args), args.steps)
            print(json.dumps({**asdict(result), "xcos_lightning": xcos_lightning.__file__}))
            return
        benchmark(args, setup)


def benchmark(args: argparse.Namespace, setup: Setup) -> None:
    """Interleaved rounds of every variant, the table of medians and the ratios against the targets."""
    images = setup.loader.dataset[0]["img_a"].shape[0] * 2
    variants: dict[str, Callable[[], Result]] = {
        "lightning xcos": lambda: measure(lambda: run_lightning(setup.build(True), setup, args), args.steps),
        "plain xcos": lambda: measure(lambda: (run_plain(setup.build(True), setup, args), None), args.steps),
        "lightning arcface": lambda: measure(lambda: run_lightning(setup.build(False), setup, args), args.steps),
    }
    if args.only_lightning_xcos:
        variants = {"lightning xcos": variants["lightning xcos"]}
    if args.baseline_tree:
        argv = without_option(sys.argv[1:], "--baseline-tree")
        variants["lightning xcos"] = lambda: run_in_tree(REPO, argv)
        variants["baseline xcos"] = lambda: run_in_tree(args.baseline_tree, argv)
    print(f"{setup.text}; {args.warmup} warm-up + {args.steps} timed steps; torch {torch.__version__}, lightning "
          f"{L.__version__}, threads={torch.get_num_threads()}; this checkout {REPO}"
          + (f", baseline {args.baseline_tree}" if args.baseline_tree else "")
          + f"; load average at start: {os.getloadavg()[0]:.1f}", flush=True)

    results: dict[str, list[Result]] = {k: [] for k in variants}
    names = list(variants)
    for r in range(args.rounds):
        # Each round starts with another variant: the process's first run also pays one-time allocations.
        for name in names[r % len(names):] + names[:r % len(names)]:
            results[name].append(variants[name]())
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{k} {v[-1].wall:.3f} wall / {v[-1].cpu:.3f} CPU" for k, v in results.items())
            + f" s/step; load average {os.getloadavg()[0]:.1f}", flush=True)

    wall = {k: statistics.median(x.wall for x in v) for k, v in results.items()}
    cpu = {k: statistics.median(x.cpu for x in v) for k, v in results.items()}
    print(f"\nmedians of {args.rounds} interleaved rounds; load average at the end {os.getloadavg()[0]:.1f}\n")
    print("| variant | wall s / step | CPU s / step | images/s (wall) | images/s (CPU) | CPU ms / image "
          "| peak RSS MiB (max) | peak RSS growth MiB (median) | fit() outside the batches, wall s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, runs in results.items():
        outside = [x.outside for x in runs if x.outside is not None]
        print(f"| {name} | {wall[name]:.3f} | {cpu[name]:.3f} | {images / wall[name]:.1f} | {images / cpu[name]:.1f} "
              f"| {1000 * cpu[name] / images:.1f} | {max(x.peak for x in runs):.0f} "
              f"| {statistics.median(x.growth for x in runs):+.0f} "
              f"| {f'{statistics.median(outside):.2f}' if outside else '-'} |")
    light, plain, arc, base = "lightning xcos", "plain xcos", "lightning arcface", "baseline xcos"
    if args.baseline_tree:
        per_round = ", ".join(f"{b.wall / t.wall:.3f} / {b.cpu / t.cpu:.3f}" for t, b in zip(results[light],
                                                                                             results[base]))
        print(f"\nthis checkout / baseline images/s: {wall[base] / wall[light]:.3f} (wall), "
              f"{cpu[base] / cpu[light]:.3f} (CPU), medians; per round (wall / CPU): {per_round}; target >= 1")
    if not args.only_lightning_xcos:
        print(f"\nLightning / plain images/s: {wall[plain] / wall[light]:.3f} (wall), "
              f"{cpu[plain] / cpu[light]:.3f} (CPU); target >= 0.95")
        print(f"xCos vs ArcFace-only per image (Lightning): {100 * (wall[light] / wall[arc] - 1):+.1f} % (wall), "
              f"{100 * (cpu[light] / cpu[arc] - 1):+.1f} % (CPU); target <= +15 %")

    if args.profile:
        with tempfile.TemporaryDirectory() as folder:
            profiler = SimpleProfiler(dirpath=folder, filename="profile", extended=True)
            run_lightning(setup.build(True), setup, args, profiler)
            report = next(Path(folder).glob("*profile*.txt")).read_text().splitlines()
        print(f"\nLightning xCos fit under SimpleProfiler ({args.warmup + args.steps} steps, warm-up included; "
              "actions under 0.1 % left out):\n")
        print("\n".join(line for line in report if not is_minor(line)))


if __name__ == "__main__":
    main()
