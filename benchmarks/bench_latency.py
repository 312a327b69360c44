"""Explanation latency per pair, every registered explainer x backbone, one pair and batched, CPU.

The shape of the xSSAB paper's Table 3: one row per method of ``xcos_lightning.explain.list_explainers()``
(``--methods``), one column per backbone (``--backbones``, default MobileFaceNet, IResNet-18, IResNet-50)
and call size: one pair per call, then ``--batch`` pairs per call; cells are median seconds per pair
(wall, then the same table in CPU seconds, ``time.process_time``: on a shared machine the wall time also
counts waiting for a core). Mask methods run at their constructor defaults (CorrRISE, S-RISE, RISE: 500
masks; occlusion: patches 7/14/28 px at stride 5, 1249 masks) unless ``--n-masks`` / ``--occlusion-stride``
say otherwise; their cost grows linearly with the number of masks (2 forwards per mask and pair).

Model per backbone: ``XCosModel(create_backbone(trunk), LearnedAttention)``, eval mode. Post-hoc methods
explain its embedding (the flattened 32x7x7 grid), ``xcos`` its own S * W maps. MobileFaceNet's trunk
holds the shared pretrained weights (``weights/mobilefacenet_128d.pt``) when present and ``--width`` is
1; everything else (IResNets, grid head, attention) is randomly initialised: the time of a forward or
backward does not depend on the weights. Pairs: the first ``--batch`` genuine LFW pairs of ``pairs.txt``
(centre crop, as ``lfw_pretrained.py``), random images without the shared data.

Two reference rows per backbone, same pairs: ``forward`` (embeddings of both faces under ``no_grad``)
and ``forward + backward`` (both faces with input gradients: one ``autograd.grad`` of the pair cosines).
Targets: xSSAB <= 3x ``forward + backward``; xCos maps (``xcos``) <= 1.2x ``forward``.
Each method is called once untimed first (it builds its mask set and inference copy then; gradient
methods also once batched); rounds (``--rounds``) interleave methods and call sizes. Peak RSS growth
per method: ``VmHWM`` of ``/proc/self/status`` after resetting it (``/proc/self/clear_refs``), above the
RSS before the call, for the first call and the largest over the timed calls.

    .venv/bin/python benchmarks/bench_latency.py [--methods all] [--backbones mobilefacenet,iresnet18,iresnet50] \
        [--width 1] [--n-masks N] [--occlusion-stride S] [--batch 4] [--rounds 2] [--threads 1]

At the defaults (500 masks; occlusion 1249) one IResNet-50 pair alone takes minutes on one CPU thread.
Full run sized for about 5-6 min on the busy 2-core CPU (8 masks, occlusion 27 masks, 2 pairs per batch):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_latency.py --threads 1 --n-masks 8 --occlusion-stride 56 \
        --batch 2 --rounds 2
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from lfw_pretrained import load_face, read_pairs  # sibling script: same crop as the LFW benchmark
from torch import Tensor

from xcos_lightning.explain import Explainer, list_explainers
from xcos_lightning.explain.registry import build_explainer
from xcos_lightning.explain.perturbation import MaskingExplainer
from xcos_lightning.models import LearnedAttention, XCosModel, create_backbone
from trunks import trunk_kwargs  # sibling script: --width per trunk
from memory import rss_mib, reset_peak_rss, peak_rss_mib  # sibling script: /proc readings

REPO = Path(__file__).resolve().parents[1]
REFERENCES = ("forward", "forward + backward")


def measured(fn: Callable[[], object]) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS growth MiB) of one call."""
    before = rss_mib()
    reset_peak_rss()
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu, peak_rss_mib() - before


def build_model(trunk: str, args: argparse.Namespace) -> tuple[XCosModel, str]:
    kwargs = trunk_kwargs(trunk, args.width)
    weights = args.shared / "weights/mobilefacenet_128d.pt"
    pretrained = trunk == "mobilefacenet" and args.width == 1 and weights.is_file()
    if pretrained:
        kwargs["pretrained"] = str(weights)
    torch.manual_seed(0)
    model = XCosModel(create_backbone(trunk, grid_channels=32, **kwargs), LearnedAttention(32)).eval()
    return model, f"{trunk} {kwargs if not pretrained else '(pretrained trunk)'}"


def load_pairs(args: argparse.Namespace) -> tuple[Tensor, Tensor, str]:
    """``--batch`` pairs ``(B, 3, 112, 112)`` in [0, 1]: genuine LFW pairs, or random images."""
    lfw = args.shared / "data/lfw"
    if not (lfw / "pairs.txt").is_file():
        g = torch.Generator().manual_seed(0)
        return torch.rand(args.batch, 3, 112, 112, generator=g), torch.rand(args.batch, 3, 112, 112, generator=g), \
            "random images (no LFW under --shared)"
    pairs, same = read_pairs(lfw / "pairs.txt")
    chosen = [pairs[i] for i in np.flatnonzero(same)[:args.batch]]
    img_a = torch.stack([load_face(lfw / a) for a, _ in chosen])
    img_b = torch.stack([load_face(lfw / b) for _, b in chosen])
    return img_a, img_b, f"the first {args.batch} genuine LFW pairs"


def make_explainer(name: str, model: XCosModel, args: argparse.Namespace) -> Explainer:
    options: dict = {} if args.n_masks is None else {"n_masks": args.n_masks}  # mask methods only
    if name == "occlusion" and args.occlusion_stride is not None:
        options["stride"] = args.occlusion_stride
    return build_explainer(name, model, **options)  # Grad-CAM: default layer, the grid head


def references(model: XCosModel) -> dict[str, Callable[[Tensor, Tensor], object]]:
    def forward(img_a: Tensor, img_b: Tensor) -> Tensor:
        with torch.no_grad():
            return model(torch.cat([img_a, img_b]))

    def forward_backward(img_a: Tensor, img_b: Tensor) -> Tensor:
        x = torch.cat([img_a, img_b]).requires_grad_(True)
        emb_a, emb_b = model(x).chunk(2)
        return torch.autograd.grad(F.cosine_similarity(emb_a, emb_b, dim=1).sum(), x)[0]

    return {"forward": forward, "forward + backward": forward_backward}


def row_label(name: str, explainer: Explainer | None) -> str:
    """Method name with its mask count, which sets its cost."""
    if isinstance(explainer, MaskingExplainer):
        return f"{name} ({explainer.mask_set((112, 112), torch.device('cpu')).masks.shape[0]} masks)"
    return name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("XCOS_SHARED", REPO.parent / "shared")))
    parser.add_argument("--methods", default="all", help=f"comma-separated, of {list_explainers()}")
    parser.add_argument("--backbones", default="mobilefacenet,iresnet18,iresnet50")
    parser.add_argument("--width", type=float, default=1.0, help="MobileFaceNet width_mult; IResNet width / 64")
    parser.add_argument("--n-masks", type=int, default=None, help="masks of corrrise/srise/rise (default: theirs)")
    parser.add_argument("--occlusion-stride", type=int, default=None, help="occlusion stride (default: its 5)")
    parser.add_argument("--batch", type=int, default=4, help="pairs per call of the batched columns")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved timed calls of every method and size")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    methods = list_explainers() if args.methods == "all" else [m.strip() for m in args.methods.split(",")]
    unknown = sorted(set(methods) - set(list_explainers()))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {list_explainers()}")
    backbones = [b.strip() for b in args.backbones.split(",")]

    img_a, img_b, source = load_pairs(args)
    sizes = {"1 pair": (img_a[:1], img_b[:1]), f"{args.batch} pairs": (img_a, img_b)}
    print(f"pairs: {source}; methods {methods}; torch {torch.__version__}, threads={torch.get_num_threads()}; "
          f"load average at start: {os.getloadavg()[0]:.1f}", flush=True)

    rows = [*REFERENCES, *methods]
    labels = {name: name for name in rows}
    walls: dict[tuple[str, str, str], list[float]] = {}  # (row, backbone, size) -> s / pair per round
    cpus: dict[tuple[str, str, str], list[float]] = {}
    first_rss: dict[tuple[str, str], float] = {}
    timed_rss: dict[tuple[str, str], float] = {}
    for backbone in backbones:
        model, description = build_model(backbone, args)
        explainers = {name: make_explainer(name, model, args) for name in methods}
        calls = {**references(model), **explainers}
        with torch.no_grad():
            score = F.cosine_similarity(*model(torch.cat([img_a[:1], img_b[:1]])).chunk(2)).item()
        print(f"{backbone}: {description}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, "
              f"cosine of the first pair {score:.3f}", flush=True)
        for name, fn in calls.items():
            _, _, first_rss[name, backbone] = measured(lambda: fn(*sizes["1 pair"]))
            if not isinstance(calls[name], MaskingExplainer):  # cheap: warm the batched shapes up too
                fn(*sizes[f"{args.batch} pairs"])
            labels[name] = row_label(name, explainers.get(name))
        for r in range(args.rounds):
            start = time.perf_counter()
            for name, fn in calls.items():
                for size, (a, b) in sizes.items():
                    wall, cpu, grown = measured(lambda: fn(a, b))
                    walls.setdefault((name, backbone, size), []).append(wall / len(a))
                    cpus.setdefault((name, backbone, size), []).append(cpu / len(a))
                    timed_rss[name, backbone] = max(timed_rss.get((name, backbone), grown), grown)
            print(f"{backbone} round {r + 1}/{args.rounds}: {time.perf_counter() - start:.1f} s; load average "
                  f"{os.getloadavg()[0]:.1f}", flush=True)
        for explainer in explainers.values():
            explainer.release()
        del model, explainers, calls
        gc.collect()

    columns = [(b, s) for b in backbones for s in sizes]
    header = "| method | " + " | ".join(f"{b} {s}" for b, s in columns) + " |"
    rule = "|---" * (len(columns) + 1) + "|"
    for title, values in (("wall", walls), ("CPU", cpus)):
        print(f"\nseconds per pair ({title}), medians of {args.rounds} rounds\n\n{header}\n{rule}")
        for name in rows:
            cells = " | ".join(f"{statistics.median(values[name, b, s]):.3g}" for b, s in columns)
            print(f"| {labels[name]} | {cells} |")

    med = {k: statistics.median(v) for k, v in cpus.items()}
    print("\nratios of CPU seconds per pair (targets: xssab <= 3x forward + backward, xcos <= 1.2x forward)\n")
    print("| backbone, call size | xssab / (forward + backward) | xcos / forward |\n|---|---|---|")
    for b, s in columns:
        xssab = f"{med['xssab', b, s] / med['forward + backward', b, s]:.2f}x" if "xssab" in methods else "-"
        xcos = f"{med['xcos', b, s] / med['forward', b, s]:.2f}x" if "xcos" in methods else "-"
        print(f"| {b}, {s} | {xssab} | {xcos} |")

    print("\npeak RSS growth per call, MiB: first call (builds masks, inference copy) / largest timed call\n")
    print("| method | " + " | ".join(backbones) + " |\n" + "|---" * (len(backbones) + 1) + "|")
    for name in rows:
        cells = " | ".join(f"{first_rss[name, b]:+.0f} / {timed_rss[name, b]:+.0f}" for b in backbones)
        print(f"| {labels[name]} | {cells} |")


if __name__ == "__main__":
    main()
