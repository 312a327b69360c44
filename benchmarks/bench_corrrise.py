"""CorrRISE speed and memory: batched explainer vs a literal per-mask loop, same pair, same masks, CPU.

Model: the shared pretrained MobileFaceNet (``load_pretrained``); pair: the first genuine LFW pair of
``pairs.txt`` (centre crop, as ``lfw_pretrained.py``). The baseline follows Algorithm 1 of the paper
literally, as a straightforward implementation would: the same model object, one forward per mask
under ``no_grad``, then one Pearson correlation per pixel. The batched rows are ``CorrRISE`` calls:

- ``default``: what ``CorrRISE(model)`` does -- masked forwards under ``inference_mode`` on an inference
  copy (BatchNorm folded into the convolutions, channels-last), 8 images per forward on CPU;
- ``fast=False``: the same batching on the model as given (no folding, no channels-last);
- ``--batch-sizes``: the default path at other batch sizes.

Every variant runs once per round, rounds interleave (``--rounds``), and the table gives medians of
wall and CPU seconds (``time.process_time``: on a shared machine the wall time also counts waiting for
a core). GFLOP/s = 2 x multiply-adds of the convolutions and linear layers per image / CPU seconds per
image; the ceiling line compares it with a large float32 matrix product on the same threads. Then
``--repeats`` further default calls with ``--repeat-masks`` masks measure resident-memory growth
(``/proc/self/statm``). One torch thread by default: on a busy 2-core machine OpenMP's spinning threads
slow each op down by orders of magnitude.

    .venv/bin/python benchmarks/bench_corrrise.py [--n-masks 500] [--rounds 3] [--threads 1] [--repeats 50]
"""
from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from lfw_pretrained import load_face, read_pairs  # sibling script: same crop as the LFW benchmark

from xcos_lightning.explain import CorrRISE
from xcos_lightning.io.pretrained import load_pretrained
from memory import rss_mib  # sibling script: /proc readings

REPO = Path(__file__).resolve().parents[1]


def live_tensors() -> int:
    """Tensors reachable by the garbage collector: a leak in Python-held state shows up here."""
    gc.collect()
    return sum(isinstance(obj, torch.Tensor) for obj in gc.get_objects())


def multiply_adds(model: torch.nn.Module) -> int:
    """Multiply-adds of the convolutions and linear layers for one 112 x 112 image (hooks on a probe)."""
    total = 0

    def count(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            kh, kw = module.kernel_size
            total += output.numel() * module.in_channels // module.groups * kh * kw
        elif isinstance(module, torch.nn.Linear):
            total += output.numel() * module.in_features

    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    handles = [m.register_forward_hook(count) for m in layers]
    with torch.no_grad():
        model(torch.zeros(1, 3, 112, 112))
    for h in handles:
        h.remove()
    return total


def gemm_gflops(size: int = 1024, repeats: int = 20) -> float:
    """Best single-call float32 matrix-product throughput (GFLOP/s of CPU time): the ceiling of any forward."""
    a, b = torch.rand(size, size), torch.rand(size, size)
    a @ b
    best = math.inf
    for _ in range(repeats):
        cpu = time.process_time()
        a @ b
        best = min(best, time.process_time() - cpu)
    return 2 * size**3 / best / 1e9


def timed(fn: Callable[[], object]) -> tuple[object, float, float]:
    """(result, wall seconds, CPU seconds of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


@torch.no_grad()
def per_mask_loop(model: torch.nn.Module, x: torch.Tensor, partner_img: torch.Tensor,
                  masks: torch.Tensor) -> tuple[np.ndarray, float, float]:
    """Algorithm 1 literally: N single-image forwards, then H*W per-pixel Pearson correlations.

    Returns the map ``(H, W)`` and the wall and CPU seconds spent in the forwards.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    partner = model(partner_img[None])
    scores = np.array([F.cosine_similarity(model((x * m)[None]), partner).item() for m in masks])
    forward_wall, forward_cpu = time.perf_counter() - wall, time.process_time() - cpu
    values = masks.flatten(1).double().numpy()
    out = np.zeros(values.shape[1])
    for p in range(values.shape[1]):
        if values[:, p].std() > 0:  # pixels never varied -> 0
            out[p] = np.corrcoef(scores, values[:, p])[0, 1]
    return out.reshape(masks.shape[1:]), forward_wall, forward_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("XCOS_SHARED", REPO.parent / "shared")))
    parser.add_argument("--n-masks", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions of every variant")
    parser.add_argument("--batch-sizes", default="4,16", help="extra batch sizes of the default path")
    parser.add_argument("--repeats", type=int, default=50, help="memory-growth calls (0: skip)")
    parser.add_argument("--repeat-masks", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = load_pretrained(f"mobilefacenet:{args.shared / 'weights/mobilefacenet_128d.pt'}")
    lfw = args.shared / "data/lfw"
    pairs, same = read_pairs(lfw / "pairs.txt")
    path_a, path_b = pairs[int(np.argmax(same))]
    img_a, img_b = load_face(lfw / path_a)[None], load_face(lfw / path_b)[None]
    macs = multiply_adds(model)
    print(f"model: pretrained MobileFaceNet ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, "
          f"{macs / 1e6:.0f}M multiply-adds per image); pair: {path_a} vs {path_b}; N={args.n_masks} masks per "
          f"image, {2 * args.n_masks} forwards per pair; torch {torch.__version__}, threads="
          f"{torch.get_num_threads()}; load average at start: {os.getloadavg()[0]:.1f}")

    explainers = {
        "batched default (BN folded, channels-last, inference_mode; batch 8)": CorrRISE(model, n_masks=args.n_masks),
        "batched fast=False (model as given; batch 8)": CorrRISE(model, n_masks=args.n_masks, fast=False),
    }
    for size in (int(s) for s in args.batch_sizes.split(",") if s):
        explainers[f"batched default, batch {size}"] = CorrRISE(model, n_masks=args.n_masks, batch_size=size)
    (first, *_), start = explainers.values(), time.perf_counter()
    masks = first.mask_set((112, 112), img_a.device).masks
    mask_seconds = time.perf_counter() - start
    copy_seconds = []
    with torch.inference_mode():
        partner = model(img_b)  # warms oneDNN up for the loop's single-image forwards
        for explainer in explainers.values():
            explainer.mask_set((112, 112), img_a.device)  # same seed, same masks; generated outside the timing
            start = time.perf_counter()
            explainer.masked_model()  # the inference copy, built on the first call and kept
            copy_seconds.append(time.perf_counter() - start)
            explainer.masked_scores(img_a, partner, masks[:16])  # warms oneDNN up for this batch size

    loop_name = "per-mask loop (Algorithm 1: model as given, no_grad, 1 image per forward)"
    walls: dict[str, list[float]] = {loop_name: [], **{k: [] for k in explainers}}
    cpus: dict[str, list[float]] = {k: [] for k in walls}
    forward_walls, forward_cpus, diffs = [], [], {}
    for r in range(args.rounds):
        (loop_a, fwa, fca), wall_a, cpu_a = timed(lambda: per_mask_loop(model, img_a[0], img_b[0], masks))
        (loop_b, fwb, fcb), wall_b, cpu_b = timed(lambda: per_mask_loop(model, img_b[0], img_a[0], masks))
        walls[loop_name].append(wall_a + wall_b)
        cpus[loop_name].append(cpu_a + cpu_b)
        forward_walls.append(fwa + fwb)
        forward_cpus.append(fca + fcb)
        loop = torch.from_numpy(np.stack([loop_a, loop_b])).float()
        for name, explainer in explainers.items():
            out, wall, cpu = timed(lambda: explainer(img_a, img_b))
            walls[name].append(wall)
            cpus[name].append(cpu)
            diffs[name] = max(diffs.get(name, 0.0), (torch.cat([out.raw_a, out.raw_b]) - loop).abs().max().item())
        print(f"round {r + 1}/{args.rounds}: loop {walls[loop_name][-1]:.1f} s, default "
              f"{walls[next(iter(explainers))][-1]:.1f} s (wall); load average {os.getloadavg()[0]:.1f}", flush=True)

    med = {k: (statistics.median(walls[k]), statistics.median(cpus[k])) for k in walls}
    base_wall, base_cpu = med[loop_name]
    per_image = 2 * args.n_masks
    print(f"\nmask set generated once in {mask_seconds:.2f} s; inference copy (BN folding) built once in "
          f"{copy_seconds[0]:.2f} s; medians of {args.rounds} interleaved rounds\n")
    print("| variant | wall s / pair | CPU s / pair | speed-up vs loop (wall) | speed-up vs loop (CPU) "
          "| GFLOP/s | max abs diff of maps vs loop |")
    print("|---|---|---|---|---|---|---|")
    fw, fc = statistics.median(forward_walls), statistics.median(forward_cpus)
    print(f"| {loop_name} | {base_wall:.2f} | {base_cpu:.2f} | 1.0x | 1.0x | {2 * macs * per_image / fc / 1e9:.1f} "
          "(forwards) | 0 |")
    print(f"| ... its forwards only | {fw:.2f} | {fc:.2f} | | | | |")
    for name in explainers:
        wall, cpu = med[name]
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {base_wall / wall:.2f}x | {base_cpu / cpu:.2f}x "
              f"| {2 * macs * per_image / cpu / 1e9:.1f} | {diffs[name]:.1e} |")

    peak = gemm_gflops()
    print(f"\nceiling: a {1024}^3 float32 matrix product runs at {peak:.0f} GFLOP/s on {torch.get_num_threads()} "
          f"thread(s) here; even if every forward ran at that rate, the forwards alone could be at most "
          f"{peak / (2 * macs * per_image / fc / 1e9):.1f}x faster than the loop's (depthwise and 1x1 convolutions "
          "on small maps run well below it)")

    if args.repeats > 0:
        repeated = CorrRISE(model, n_masks=args.repeat_masks)
        repeated(img_a, img_b)  # fills the mask cache and settles allocator pools before measuring growth
        # RSS after 0, half and all repeats: a leak grows in both halves, allocator settling only early.
        tensors_before, rss = live_tensors(), [rss_mib()]
        half = max(args.repeats // 2, 1)
        start = time.perf_counter()
        for i in range(1, args.repeats + 1):
            repeated(img_a, img_b)
            if i in (half, args.repeats):
                rss.append(rss_mib())
        repeat_seconds = (time.perf_counter() - start) / args.repeats
        tensor_growth = live_tensors() - tensors_before
        print(f"\n| repeated default calls | masks | mean seconds / call | RSS growth calls 1-{half} "
              f"| RSS growth calls {half + 1}-{args.repeats} | RSS after | live tensors growth |")
        print("|---|---|---|---|---|---|---|")
        print(f"| {args.repeats} | {args.repeat_masks} | {repeat_seconds:.2f} | {rss[1] - rss[0]:+.1f} MiB "
              f"| {rss[-1] - rss[1]:+.1f} MiB | {rss[-1]:.0f} MiB | {tensor_growth:+d} |")


if __name__ == "__main__":
    main()
