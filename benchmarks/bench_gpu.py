"""GPU throughput of the project beside its floors, in one process: training step, verification, explanation.

Sized for one run of at most 4 minutes on one GPU (H200 class). Three sections, each printed as a table:

1. Training step: grid backbone (``--trunk``, default IResNet-50) + ArcFace (s=64, m=0.5) over ``--classes``
   identities, ``--pairs`` pairs (2 x pairs images of 112 x 112) per step, ``--precision`` (bf16-mixed on
   CUDA, 32-true on the CPU), SGD momentum 0.9, on 4 distinct random batches already on the device, cycled
   (pixel values do not change the cost of a step). ``--warmup`` untimed steps, then ``--steps`` timed ones,
   with the device synchronised at both ends; ``--rounds`` interleaved repetitions (medians). Rows (``--rows``
   picks some: ``nchw,channels_last,compiled,xcos,lightning_xcos,lightning_arcface``):
   - ``bare floor, contiguous (NCHW)`` and ``bare floor, channels-last``: trunk + grid head + ArcFace in a
     plain loop (autocast, zero_grad, backward, step), the model in the default memory format, then in
     channels-last (``models.device.set_channels_last``);
   - ``bare floor, channels-last + compile``: the same after ``models.device.compile_trunk`` (inductor on
     CUDA, ``eager`` with ``--smoke``); the compile seconds of its first step are printed;
   - ``bare xCos, channels-last``: the floor plus attention and the MSE of xCos to the detached self cosine
     (the module's loss, ``lambda_ce`` 0.5);
   - ``Lightning xCos`` / ``Lightning ArcFace-only``: ``XCosModule`` with every switch as shipped
     (``channels_last: auto``, ``compile: false``, teacher ``self``, ``nonfinite: raise``) fitted by
     ``lightning.Trainer`` with ``gradient_clip_val`` 5 as in ``configs/ms1m``, no logger, checkpoints,
     progress bar or validation (``--lightning-channels-last true|false`` overrides the memory format).
     Targets: xCos >= 0.9x and ArcFace-only >= 0.95x the compiled floor.
2. Verification: ``xcos_lightning.evaluate.score_pair_set`` (the engine of ``explain.py verify``: decoding
   workers, flip TTA, ``--verify-batch`` pairs per forward, bf16 on CUDA) on ``--verify-data`` (default
   LFW under the shared folder, else random pairs in memory) against the same ``pair_scores`` forward on batches
   already on the device; models of ``--explain-trunks`` prepared by ``models.device.prepare_for_device``.
   Images/s count every image forwarded (mirrors included). Target: verify >= 0.8x the bare forward.
3. Explanation: seconds per pair of ``xcos``, ``xssab``, ``gradcam`` and ``corrrise`` (``--n-masks``, default
   1,000), built by the registry's ``build_explainer`` as ``explain.py benchmark`` builds them, bf16 on
   CUDA, ``--explain-pairs`` random pairs per call on the device, each method called once untimed first,
   median of ``--explain-rounds`` calls; models as in 2 (random weights: the cost of a forward does not
   depend on them). CorrRISE is compared with its 2 x n_masks masked forwards
   per pair at the bare no-grad forward rate of the same model at the explainer's batch size (target
   <= 1.5x).

``--device cpu --smoke`` runs every row in seconds (tiny trunk at width 0.25, 2 pairs, 8 masks): the CI test.

    python benchmarks/bench_gpu.py [--device cuda] [--json results.json]
    python benchmarks/bench_gpu.py --device cpu --smoke
"""
from __future__ import annotations

import argparse
import json
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
from torch import Tensor
from torch.utils.data import DataLoader

from memory import peak_rss_mib, reset_peak_rss  # sibling script: /proc readings
from trunks import trunk_kwargs  # sibling script: --width per trunk
from xcos_lightning.datamodules.pairs_file import load_pair_set
from xcos_lightning.evaluate import pair_scores, score_pair_set
from xcos_lightning.explain.registry import build_explainer
from xcos_lightning.models import ArcFace, GridBackbone, LearnedAttention, XCosModel, create_backbone
from xcos_lightning.models.backbone import grid_embedding
from xcos_lightning.models.device import compile_trunk, is_channels_last, prepare_for_device, set_channels_last
from xcos_lightning.module import XCosModule

REPO = Path(__file__).resolve().parents[1]
METHODS = ("xcos", "xssab", "gradcam", "corrrise")
ROWS = ("nchw", "channels_last", "compiled", "xcos", "lightning_xcos", "lightning_arcface")
COMPILED = "bare floor, channels-last + compile"
SMOKE = {"trunk": "tiny", "width": 0.25, "explain_trunks": "tiny", "classes": 16, "pairs": 2, "warmup": 1, "steps": 2,
         "n_masks": 8, "explain_pairs": 2, "explain_rounds": 1, "verify_pairs": 20, "verify_batch": 4,
         "verify_workers": 0, "verify_forwards": 2, "explain_forwards": 2, "compile_backend": "eager"}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of ``fn()``, the device synchronised before and after."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        reset_peak_rss()


def peak_gib(device: torch.device) -> float:
    """Peak GPU memory allocated (CUDA) or peak resident set size of the process (CPU), GiB."""
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else peak_rss_mib() / 1024


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision.startswith("bf16"))


def backbone(args: argparse.Namespace, trunk: str) -> GridBackbone:
    return create_backbone(trunk, grid_channels=32, **trunk_kwargs(trunk, args.width))


def batches(args: argparse.Namespace, device: torch.device) -> list[dict[str, Tensor]]:
    """4 distinct training batches on ``device``: ``img_a``/``img_b`` ``(pairs, 3, 112, 112)`` in [0, 1], labels."""
    g = torch.Generator().manual_seed(0)
    n, c = args.pairs, args.classes
    return [{"img_a": torch.rand(n, 3, 112, 112, generator=g).to(device),
             "img_b": torch.rand(n, 3, 112, 112, generator=g).to(device),
             "label_a": torch.randint(0, c, (n,), generator=g).to(device),
             "label_b": torch.randint(0, c, (n,), generator=g).to(device)} for _ in range(4)]


# ------------------------------------------------------------------------------------------------ training
def bare_loop(args: argparse.Namespace, device: torch.device, data: list[dict[str, Tensor]], xcos: bool,
              compiled: bool, channels_last: bool = True) -> dict[str, float]:
    """Seconds per timed step (and of the first step, compilation included) of the plain loop."""
    torch.manual_seed(0)
    model = XCosModel(backbone(args, args.trunk), LearnedAttention(32) if xcos else None).to(device)
    set_channels_last(model, channels_last)
    head = ArcFace(model.embedding_dim, args.classes).to(device)
    reports: list[str] = []
    if compiled:
        compile_trunk(model.backbone, args.compile_backend, report=reports.append)
    params = [*model.parameters(), *head.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)

    def step(batch: dict[str, Tensor]) -> None:
        labels = torch.cat([batch["label_a"], batch["label_b"]])
        with autocast(device, args.precision):
            grids = model.grid(torch.cat([batch["img_a"], batch["img_b"]]))
            emb = grid_embedding(grids)
            loss = head.loss(emb, labels)[0]
            if xcos:
                _, _, score = model.maps_from_grids(*grids.chunk(2))
                target = F.cosine_similarity(*emb.detach().float().chunk(2), dim=1)
                loss = 0.5 * loss + 0.5 * F.mse_loss(score.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.train()
    reset_peak(device)
    first = seconds(lambda: step(data[0]), device)
    for i in range(1, args.warmup):
        step(data[i % 4])
    timed = seconds(lambda: [step(data[i % 4]) for i in range(args.steps)], device)
    out = {"s_per_step": timed / args.steps, "peak_gib": peak_gib(device), "first_step_s": first}
    for line in reports:
        print(f"  bare floor: {line}", flush=True)
    return out


class StepWindow(L.Callback):
    """Device-synchronised clock at the end of the last warm-up batch and of the last batch."""

    def __init__(self, warmup: int, last: int) -> None:
        self.warmup, self.last = warmup, last
        self.start = self.end = 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if batch_idx in (self.warmup - 1, self.last):
            sync(pl_module.device)
            now = time.perf_counter()
            if batch_idx == self.warmup - 1:
                self.start = now
            else:
                self.end = now


def lightning_step(args: argparse.Namespace, device: torch.device, data: list[dict[str, Tensor]],
                   xcos: bool) -> dict[str, float]:
    """Seconds per timed step of ``XCosModule`` as shipped in ``lightning.Trainer``."""
    torch.manual_seed(0)
    module = XCosModule(backbone(args, args.trunk), num_classes=args.classes, xcos=xcos, lr=0.01,
                        channels_last=args.lightning_channels_last)
    total = args.warmup + args.steps
    window = StepWindow(args.warmup, total - 1)
    loader = DataLoader([data[i % 4] for i in range(total)], batch_size=None)  # items are whole batches
    with tempfile.TemporaryDirectory() as root:
        trainer = L.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu",
                            devices=[device.index or 0] if device.type == "cuda" else 1,
                            precision=args.precision, max_steps=total, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=5.0,
                            limit_val_batches=0, num_sanity_val_steps=0, callbacks=[window], default_root_dir=root)
        reset_peak(device)
        trainer.fit(module, train_dataloaders=loader)
    return {"s_per_step": (window.end - window.start) / args.steps, "peak_gib": peak_gib(device),
            "channels_last": float(is_channels_last(module.model))}


def training_section(args: argparse.Namespace, device: torch.device) -> dict[str, dict[str, float]]:
    data = batches(args, device)
    cl = args.lightning_channels_last
    shipped = "as shipped" if cl == "auto" else f"channels_last={str(cl).lower()}"
    every = {  # --rows key: (row name, run)
        "nchw": ("bare floor, contiguous (NCHW)",
                 lambda: bare_loop(args, device, data, xcos=False, compiled=False, channels_last=False)),
        "channels_last": ("bare floor, channels-last",
                          lambda: bare_loop(args, device, data, xcos=False, compiled=False)),
        "compiled": (COMPILED, lambda: bare_loop(args, device, data, xcos=False, compiled=True)),
        "xcos": ("bare xCos, channels-last", lambda: bare_loop(args, device, data, xcos=True, compiled=False)),
        "lightning_xcos": (f"Lightning xCos, {shipped}", lambda: lightning_step(args, device, data, xcos=True)),
        "lightning_arcface": (f"Lightning ArcFace-only, {shipped}",
                              lambda: lightning_step(args, device, data, xcos=False)),
    }
    rows = dict(every[key] for key in args.rows)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in rows}
    names = list(rows)
    for r in range(args.rounds):
        # Each round starts with another row: on a shared machine the load drifts between rows.
        for name in names[r % len(names):] + names[:r % len(names)]:
            runs[name].append(rows[name]())
            print(f"  round {r + 1}: {name}: {1000 * runs[name][-1]['s_per_step']:.1f} ms/step", flush=True)
    results = {name: {**r[0], "s_per_step": statistics.median(x["s_per_step"] for x in r),
                      "peak_gib": max(x["peak_gib"] for x in r)} for name, r in runs.items()}
    images = 2 * args.pairs
    floor_name = COMPILED if COMPILED in results else next(iter(results))
    floor = results[floor_name]["s_per_step"]
    print(f"\n### Training step: {args.trunk} grid backbone + ArcFace, {args.classes} classes, {images} images "
          f"per step, {args.precision}; {args.warmup} warm-up + {args.steps} timed steps, median of {args.rounds} "
          f"interleaved rounds; load average {os.getloadavg()[0]:.1f}\n")
    print(f"| step | ms / step | images/s | x {floor_name} | peak memory GiB |\n|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {1000 * r['s_per_step']:.1f} | {images / r['s_per_step']:,.0f} "
              f"| {floor / r['s_per_step']:.2f} | {r['peak_gib']:.2f} |")
    if COMPILED in results:
        print(f"\ncompiled floor: first step (compilation included) {results[COMPILED]['first_step_s']:.1f} s")
    lightning = [r["channels_last"] for name, r in results.items() if name.startswith("Lightning")]
    if lightning:
        print(f"Lightning models channels-last: {bool(lightning[0])}; targets: Lightning xCos >= 0.90x, "
              "ArcFace-only >= 0.95x the compiled floor")
    return results


# ------------------------------------------------------------------------------------------- verification
def explain_model(args: argparse.Namespace, trunk: str, device: torch.device) -> XCosModel:
    torch.manual_seed(0)
    model = XCosModel(backbone(args, trunk), LearnedAttention(32)).eval()
    return prepare_for_device(model, device)


def verify_pairs(args: argparse.Namespace):
    if args.verify_data:
        return load_pair_set(args.verify_data, size=112), args.verify_data
    lfw = args.shared / "data/lfw"
    if (lfw / "pairs.txt").is_file() and not args.smoke:
        return load_pair_set(f"lfw:{lfw}", size=112), f"lfw:{lfw}"
    g = torch.Generator().manual_seed(0)
    pairs = [{"img_a": torch.rand(3, 112, 112, generator=g), "img_b": torch.rand(3, 112, 112, generator=g),
              "label": torch.tensor(i % 2 == 0)} for i in range(args.verify_pairs)]
    return pairs, f"{args.verify_pairs} random pairs in memory (no decoding)"


def verification_section(args: argparse.Namespace, device: torch.device, trunks: list[str]) -> dict:
    pair_set, source = verify_pairs(args)
    bf16 = device.type == "cuda"
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, args.verify_batch, 3, 112, 112, generator=g).to(device)
    results = {}
    for trunk in trunks:
        model = explain_model(args, trunk, device)

        @torch.inference_mode()
        def bare() -> None:
            with autocast(device, "bf16" if bf16 else "32"):
                for _ in range(args.verify_forwards):
                    pair_scores(model, img[0], img[1], flip=True)

        bare()  # warm-up: cuDNN plans, allocations
        bare_s = seconds(bare, device) / (args.verify_forwards * args.verify_batch)
        score_pair_set(model, pair_set, args.verify_batch, num_workers=args.verify_workers, bf16=bf16, progress=False)
        verify_s = seconds(lambda: score_pair_set(model, pair_set, args.verify_batch, num_workers=args.verify_workers,
                                                  bf16=bf16, progress=False), device) / len(pair_set)
        results[trunk] = {"bare_s_per_pair": bare_s, "verify_s_per_pair": verify_s}
        del model
    print(f"\n### Verification: {source} ({len(pair_set)} pairs), flip TTA, {args.verify_batch} pairs per forward, "
          f"{args.verify_workers} decoding workers, bf16 {bf16}\n")
    print("| model | bare forward images/s | verify images/s | verify pairs/s | verify / bare |\n|---|---|---|---|---|")
    for trunk, r in results.items():
        # 4 images forwarded per pair: both faces and their mirrors
        print(f"| XCosModel {trunk} | {4 / r['bare_s_per_pair']:,.0f} | {4 / r['verify_s_per_pair']:,.0f} "
              f"| {1 / r['verify_s_per_pair']:,.0f} | {r['bare_s_per_pair'] / r['verify_s_per_pair']:.2f} |")
    print("\ntarget: verify >= 0.80x the bare forward")
    return results


# --------------------------------------------------------------------------------------------- explanation
def explanation_section(args: argparse.Namespace, device: torch.device, trunks: list[str]) -> dict:
    bf16 = device.type == "cuda"
    g = torch.Generator().manual_seed(0)
    img_a, img_b = (torch.rand(args.explain_pairs, 3, 112, 112, generator=g).to(device) for _ in range(2))
    results: dict[str, dict[str, float]] = {}
    for trunk in trunks:
        model = explain_model(args, trunk, device)
        # n_masks is a shared option: build_explainer passes it to the mask methods only
        explainers = {name: build_explainer(name, model, bf16=bf16, n_masks=args.n_masks) for name in METHODS}
        row = {}
        for name, explainer in explainers.items():
            explainer(img_a, img_b)  # untimed: masks, inference copy, cuDNN plans
            row[name] = statistics.median(seconds(lambda: explainer(img_a, img_b), device)
                                          for _ in range(args.explain_rounds)) / args.explain_pairs
            explainer.release()
        batch = explainers["corrrise"].batch_size_for(device)
        x = torch.rand(batch, 3, 112, 112, generator=g).to(device)

        @torch.inference_mode()
        def forwards() -> None:
            with autocast(device, "bf16" if bf16 else "32"):
                for _ in range(args.explain_forwards):
                    model(x)

        forwards()
        row["forward_s_per_image"] = seconds(forwards, device) / (args.explain_forwards * batch)
        results[trunk] = row
        print(f"  explainers on {trunk}: " + ", ".join(f"{m} {row[m]:.4f}" for m in METHODS) + " s/pair", flush=True)
        del model, explainers
    print(f"\n### Explanation: seconds per pair, {args.explain_pairs} pairs per call, bf16 {bf16}, CorrRISE "
          f"{args.n_masks} masks\n")
    print("| method | " + " | ".join(trunks) + " |\n|---" + "|---" * len(trunks) + "|")
    for name in METHODS:
        print(f"| {name} | " + " | ".join(f"{results[t][name]:.4f}" for t in trunks) + " |")
    floor = {t: 2 * args.n_masks * results[t]["forward_s_per_image"] for t in trunks}
    print("| 2 x n_masks bare forwards | " + " | ".join(f"{floor[t]:.4f}" for t in trunks) + " |")
    print("| corrrise / those forwards | " + " | ".join(f"{results[t]['corrrise'] / floor[t]:.2f}x" for t in trunks)
          + " |\n\ntarget: CorrRISE <= 1.5x its masked forwards")
    return results


def rows_list(text: str) -> list[str]:
    rows = [r.strip() for r in text.split(",") if r.strip()]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown or not rows:
        raise argparse.ArgumentTypeError(f"unknown rows {unknown}; choose from {ROWS}")
    return rows


def channels_last_setting(text: str) -> bool | str:
    return {"true": True, "false": False, "auto": "auto"}[text.lower()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda[:i] or cpu")
    parser.add_argument("--smoke", action="store_true", help=f"tiny sizes, seconds on any device: {SMOKE}")
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("XCOS_SHARED", REPO.parent / "shared")))
    parser.add_argument("--trunk", default="iresnet50", help="trunk of the training rows")
    parser.add_argument("--width", type=float, default=1.0, help="MobileFaceNet width_mult; IResNet width / 64")
    parser.add_argument("--classes", type=int, default=10_000)
    parser.add_argument("--pairs", type=int, default=128, help="pairs per training step (2x images)")
    parser.add_argument("--precision", default=None,
                        help="training precision (default bf16-mixed on CUDA, else 32-true)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rows", type=rows_list, default=list(ROWS), help=f"training rows, comma-separated, of {ROWS}")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved repetitions of the training rows")
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--lightning-channels-last", type=channels_last_setting, default="auto",
                        help="XCosModule(channels_last=...) of the Lightning rows: auto (as shipped), true or false")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark for every row")
    parser.add_argument("--explain-trunks", default="iresnet50,mobilefacenet")
    parser.add_argument("--n-masks", type=int, default=1000, help="CorrRISE masks")
    parser.add_argument("--explain-pairs", type=int, default=8, help="pairs per explainer call")
    parser.add_argument("--explain-rounds", type=int, default=3)
    parser.add_argument("--explain-forwards", type=int, default=20, help="batches of the bare forward reference")
    parser.add_argument("--verify-data", default=None,
                        help="pair set SPEC (default: LFW of --shared, else random pairs)")
    parser.add_argument("--verify-pairs", type=int, default=600, help="random pairs when no LFW")
    parser.add_argument("--verify-batch", type=int, default=64, help="pairs per verify forward (explain.py's default)")
    parser.add_argument("--verify-workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--verify-forwards", type=int, default=20, help="batches of the bare verify forward")
    parser.add_argument("--sections", default="training,verification,explanation")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this file")
    if parser.parse_known_args()[0].smoke:
        parser.set_defaults(**SMOKE)  # options given on the command line still win
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device here (use --device cpu --smoke)")
    args.precision = args.precision or ("bf16-mixed" if device.type == "cuda" else "32-true")
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # what prepare_for_device (and so XCosModule) sets: every row
    if args.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no banners per fit
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")  # batches already on the device
    warnings.filterwarnings("ignore", message=".*val_dataloader.*")

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device {device} ({name}); torch {torch.__version__}, lightning {L.__version__}; trunk {args.trunk}, "
          f"explain trunks {args.explain_trunks}; cudnn.benchmark {torch.backends.cudnn.benchmark}; load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    start = time.perf_counter()
    sections = set(args.sections.split(","))
    trunks = [t.strip() for t in args.explain_trunks.split(",")]
    results: dict[str, object] = {"device": name, "args": {k: str(v) for k, v in vars(args).items()}}
    if "training" in sections:
        results["training"] = training_section(args, device)
    if "verification" in sections:
        results["verification"] = verification_section(args, device, trunks)
    if "explanation" in sections:
        results["explanation"] = explanation_section(args, device, trunks)
    results["wall_s"] = time.perf_counter() - start
    print(f"\nwhole run {results['wall_s']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
