"""CorrRISE speed and memory: batched explainer vs a literal per-mask loop, same pair, same masks, CPU.

Model: the shared pretrained MobileFaceNet (``load_pretrained``); pair: the first genuine LFW pair of
``pairs.txt`` (centre crop, as ``lfw_pretrained.py``). The reference follows Algorithm 1 of the paper
literally: one forward per mask, then one Pearson correlation per pixel. Then ``--repeats`` further
batched calls measure resident-memory growth (``/proc/self/statm``); they use ``--repeat-masks`` masks,
since what leaks per call does not depend on N and 50 calls at N=500 take ~1 h on 2 shared cores.
One torch thread by default: on a busy 2-core machine OpenMP's spinning threads slow each op down.

    .venv/bin/python benchmarks/bench_corrrise.py [--n-masks 500] [--repeats 50] [--bf16] [--shared ../shared]
"""
from __future__ import annotations

import argparse
import copy
import gc
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from lfw_pretrained import load_face, read_pairs  # sibling script: same crop as the LFW benchmark

from xcos_lightning.explain import CorrRISE
from xcos_lightning.models.pretrained import load_pretrained

REPO = Path(__file__).resolve().parents[1]


def live_tensors() -> int:
    """Tensors reachable by the garbage collector: a leak in Python-held state shows up here."""
    gc.collect()
    return sum(isinstance(obj, torch.Tensor) for obj in gc.get_objects())


def rss_mib() -> float:
    """Resident set size of this process in MiB (``/proc/self/statm``: pages; psutil is not a dependency)."""
    resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


@torch.no_grad()
def per_mask_loop(model: torch.nn.Module, x: torch.Tensor, partner_img: torch.Tensor,
                  masks: torch.Tensor) -> tuple[np.ndarray, float]:
    """Algorithm 1 literally: N single-image forwards, then H*W per-pixel Pearson correlations.

    Returns the map ``(H, W)`` and the seconds spent in the forwards.
    """
    start = time.perf_counter()
    partner = model(partner_img[None])
    scores = np.array([F.cosine_similarity(model((x * m)[None]), partner).item() for m in masks])
    forward_seconds = time.perf_counter() - start
    values = masks.flatten(1).double().numpy()
    out = np.zeros(values.shape[1])
    for p in range(values.shape[1]):
        if values[:, p].std() > 0:  # pixels never varied -> 0
            out[p] = np.corrcoef(scores, values[:, p])[0, 1]
    return out.reshape(masks.shape[1:]), forward_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("XCOS_SHARED", REPO.parent / "shared")))
    parser.add_argument("--n-masks", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=8)  # best per-image CPU throughput here
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--repeat-masks", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bf16", action="store_true", help="also time bf16 autocast + channels_last")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = load_pretrained(f"mobilefacenet:{args.shared / 'weights/mobilefacenet_128d.pt'}")
    lfw = args.shared / "data/lfw"
    pairs, same = read_pairs(lfw / "pairs.txt")
    path_a, path_b = pairs[int(np.argmax(same))]
    img_a, img_b = load_face(lfw / path_a)[None], load_face(lfw / path_b)[None]
    print(f"model: pretrained MobileFaceNet ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params); "
          f"pair: {path_a} vs {path_b}; N={args.n_masks}; torch threads={torch.get_num_threads()}; "
          f"load average at start: {os.getloadavg()[0]:.1f}")

    explainer = CorrRISE(model, n_masks=args.n_masks, batch_size=args.batch_size)
    start = time.perf_counter()
    masks = explainer.mask_set((112, 112), img_a.device).masks
    mask_seconds = time.perf_counter() - start
    batched = explainer(img_a, img_b)

    start = time.perf_counter()
    loop_a, forwards_a = per_mask_loop(model, img_a[0], img_b[0], masks)
    loop_b, forwards_b = per_mask_loop(model, img_b[0], img_a[0], masks)
    loop_seconds = time.perf_counter() - start
    loop = torch.from_numpy(np.stack([loop_a, loop_b])).float()
    batched_maps = torch.cat([batched.raw_a, batched.raw_b])

    repeated = CorrRISE(model, n_masks=args.repeat_masks, batch_size=args.batch_size)
    repeated(img_a, img_b)  # fills the mask cache and settles allocator pools before measuring growth
    # RSS after 0, half and all repeats: a leak grows in both halves, allocator settling only early.
    tensors_before, rss = live_tensors(), [rss_mib()]
    start = time.perf_counter()
    for i in range(1, args.repeats + 1):
        repeated(img_a, img_b)
        if i in (args.repeats // 2, args.repeats):
            rss.append(rss_mib())
    repeat_seconds = (time.perf_counter() - start) / max(args.repeats, 1)
    tensor_growth = live_tensors() - tensors_before

    print(f"\nscore (clean cosine) {batched.score.item():.4f}; mask set generated once in {mask_seconds:.2f} s\n")
    print("| variant | seconds / pair | speed-up vs loop | max abs diff of maps vs loop |")
    print("|---|---|---|---|")
    print(f"| per-mask loop (Algorithm 1, fp32; {forwards_a + forwards_b:.2f} s in forwards) | {loop_seconds:.2f} "
          "| 1.0x | 0 |")
    print(f"| batched fp32 (batch {args.batch_size}) | {batched.seconds:.2f} | {loop_seconds / batched.seconds:.1f}x "
          f"| {(batched_maps - loop).abs().max().item():.2e} |")
    if args.bf16:
        fast = CorrRISE(copy.deepcopy(model).to(memory_format=torch.channels_last), n_masks=args.n_masks,
                        batch_size=args.batch_size, bf16=True, channels_last=True)
        fast.mask_set((112, 112), img_a.device)  # same seed, same masks; generated outside the timing
        fast_out = fast(img_a, img_b)
        fast_maps = torch.cat([fast_out.raw_a, fast_out.raw_b])
        print(f"| batched bf16 + channels_last | {fast_out.seconds:.2f} | {loop_seconds / fast_out.seconds:.1f}x "
              f"| {(fast_maps - loop).abs().max().item():.2e} |")
    half = args.repeats // 2
    print(f"\n| repeated batched calls | masks | mean seconds / call | RSS growth calls 1-{half} "
          f"| RSS growth calls {half + 1}-{args.repeats} | RSS after | live tensors growth |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {args.repeats} | {args.repeat_masks} | {repeat_seconds:.2f} | {rss[1] - rss[0]:+.1f} MiB "
          f"| {rss[2] - rss[1]:+.1f} MiB | {rss[2]:.0f} MiB | {tensor_growth:+d} |")


if __name__ == "__main__":
    main()
