"""Where CorrRISE's time goes on this CPU: ``torch.profiler`` over the forwards of both paths.

The per-mask loop spends ~87 % of its time in forwards of one image through the model as given; the
batched explainer runs the same forwards 8 images at a time on the BatchNorm-folded, channels-last
inference copy. Its speed-up over the loop is therefore capped by the forward throughput ratio of the
two settings. This script profiles ``--images`` forwards of each (pretrained MobileFaceNet, masked
copies of the first LFW pair's image A) and groups self CPU time by operator kind: depthwise
convolutions (``groups == channels``), other convolutions, BatchNorm, activations, the rest. With
``with_flops`` the profiler also counts convolution FLOPs, so each kind's GFLOP/s shows which part runs
far below the matrix-product rate (``bench_corrrise.py`` prints that ceiling).

    .venv/bin/python benchmarks/profile_corrrise.py [--images 256] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from pathlib import Path

import torch
from lfw_pretrained import load_face, read_pairs  # sibling script: same crop as the LFW benchmark
from torch.profiler import ProfilerActivity, profile

from xcos_lightning.explain import CorrRISE
from xcos_lightning.io.pretrained import load_pretrained

REPO = Path(__file__).resolve().parents[1]


def conv_kinds(model: torch.nn.Module, x: torch.Tensor) -> dict[tuple, str]:
    """Maps (input shape, weight shape) of every Conv2d in one forward of ``x`` to its kind."""
    kinds: dict[tuple, str] = {}

    def hook(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        depthwise = module.groups > 1 and module.groups == module.in_channels
        kinds[(tuple(inputs[0].shape), tuple(module.weight.shape))] = "depthwise conv" if depthwise else "conv"

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return kinds


def kind_of(event, kinds: dict[tuple, str]) -> str:
    name = event.key
    if "conv" in name or "mkldnn_convolution" in name:
        shapes = event.input_shapes
        if len(shapes) >= 2 and shapes[0] and shapes[1]:
            return kinds.get((tuple(shapes[0]), tuple(shapes[1])), "conv")
        return "conv"
    if "batch_norm" in name:
        return "batchnorm"
    if any(a in name for a in ("prelu", "relu", "sigmoid", "hardtanh")):
        return "activation"
    if any(a in name for a in ("addmm", "linear", "matmul", "mm")):
        return "linear"
    return "other"


def profile_forwards(model: torch.nn.Module, images: torch.Tensor, batch: int, channels_last: bool) -> dict:
    """Self CPU seconds and GFLOP per operator kind for forwards of ``images`` ``batch`` at a time."""
    probe = images[:batch].contiguous(memory_format=torch.channels_last) if channels_last else images[:batch]
    kinds = conv_kinds(model, probe)
    with torch.inference_mode():
        model(probe)  # warm oneDNN up for this shape
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_flops=True) as prof:
            for start in range(0, len(images), batch):
                x = images[start:start + batch]
                model(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
    table: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    names: dict[str, float] = defaultdict(float)
    # Self times: aten::conv2d's own time is ~0, its children (mkldnn_convolution) hold the work.
    for event in prof.key_averages(group_by_input_shape=True):
        if event.self_cpu_time_total <= 0:
            continue
        kind = kind_of(event, kinds)
        table[kind][0] += event.self_cpu_time_total / 1e6
        table[kind][1] += (event.flops or 0) / 1e9
        names[f"{event.key} ({kind})"] += event.self_cpu_time_total / 1e6
    top = sorted(names.items(), key=lambda item: -item[1])[:6]
    # The profiler times ops by the wall clock; CPU seconds of the same forwards, unprofiled, do not count
    # waiting for a core on a shared machine.
    with torch.inference_mode():
        start = time.process_time()
        for first in range(0, len(images), batch):
            x = images[first:first + batch]
            model(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
        cpu = time.process_time() - start
    return {"kinds": dict(table), "top": top, "cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("XCOS_SHARED", REPO.parent / "shared")))
    parser.add_argument("--images", type=int, default=256, help="masked images per path")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_pretrained(f"mobilefacenet:{args.shared / 'weights/mobilefacenet_128d.pt'}").eval()
    lfw = args.shared / "data/lfw"
    pairs, same = read_pairs(lfw / "pairs.txt")
    img_a = load_face(lfw / pairs[int(same.argmax())][0])[None]  # image A of the first genuine pair
    explainer = CorrRISE(model, n_masks=args.images)
    masks = explainer.mask_set(img_a.shape[-2:], img_a.device).masks
    images = img_a * masks[:, None]
    fast, channels_last = explainer.masked_model()
    paths = {"per-mask loop (model as given, 1 image per forward)": profile_forwards(model, images, 1, False),
             "batched (inference copy, 8 images per forward)": profile_forwards(fast, images, 8, channels_last)}
    print(f"{args.images} masked images per path, {args.threads} thread(s); self CPU seconds per image and GFLOP/s "
          "(convolution FLOPs as counted by torch.profiler)\n")
    for path, result in paths.items():
        print(f"top operators, {path}: " + ", ".join(f"{n} {1000 * t / args.images:.2f} ms" for n, t in result["top"]))
    cpu = [result["cpu"] for result in paths.values()]
    print(f"unprofiled CPU ms / image: " + ", ".join(f"{p} {1000 * c / args.images:.2f}" for p, c in zip(paths, cpu))
          + f"; ratio {cpu[0] / cpu[1]:.2f}x")
    paths = {path: result["kinds"] for path, result in paths.items()}
    print()
    kinds = sorted({k for t in paths.values() for k in t}, key=lambda k: -paths[next(iter(paths))].get(k, [0])[0])
    print("| operator kind | " + " | ".join(f"{p}: ms / image | GFLOP/s" for p in paths) + " |")
    print("|---|" + "---|---|" * len(paths))
    for kind in kinds:
        cells = []
        for table in paths.values():
            seconds, gflop = table.get(kind, [0.0, 0.0])
            cells += [f"{1000 * seconds / args.images:.2f}", f"{gflop / seconds:.1f}" if gflop and seconds else "-"]
        print(f"| {kind} | " + " | ".join(cells) + " |")
    totals = [sum(s for s, _ in t.values()) for t in paths.values()]
    print(f"| total | " + " | ".join(f"{1000 * s / args.images:.2f} | " for s in totals) + " |")
    print(f"\nforward throughput ratio, loop / batched: {totals[0] / totals[1]:.2f}x "
          "(the batched explainer's speed-up over the loop cannot exceed it by more than the loop's "
          "per-pixel correlation share)")


if __name__ == "__main__":
    main()
