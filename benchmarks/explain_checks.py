"""Explainer checks with numbers: model-parameter randomisation on LFW and a pointing game on occluders.

``sanity`` -- the first ``--pairs`` genuine pairs of ``--data`` (default: the shared LFW, 120 px centre
crop) are explained with the trained model (default: the shared pretrained MobileFaceNet) and with
``randomised_copy`` of it (re-initialised weights, BatchNorm statistics re-estimated on the images of
the first 32 evaluated pairs). Per pair: Spearman rank correlation of the signed maps (A and B
concatenated) of the two models; reported: median (target < 0.3), quartiles and wall time. The decision
threshold (xSSAB's argument split) is the EER threshold of the model on the evaluated genuine pairs and
as many first impostor pairs.

``pointing`` -- genuine pairs of held-out ``SyntheticFaces`` identities (no occluders); a random occluder
is pasted into image B (``SyntheticFaces.occlude``, seed = pair number). A pair counts as a hit when the
dissimilarity map of B has its maximum inside the occluder mask (an all-zero map is a miss); reported:
the hit fraction per method (target >= 80 %), also within ``--tolerance`` px of the occluder (the
pointing game's usual slack) and per occluder kind, next to the occluders' mean area (what a uniformly
random peak scores) and the ``random`` method. ``--control`` adds rows where A is B's own unoccluded
image, so the occluder is the pair's only difference. Model: ``--model SPEC``, or a small face model
trained here for ``--train-seconds`` on the other identities (trunk ``--trunk`` + grid head, embedding =
flattened grid, CosFace s=30 m=0.2, SGD with cosine decay, horizontal flips, optional ``--cutout``
black rectangles; held-out EER reported; ``--save`` keeps it as a ``.ckpt`` for ``--model``).

Both run on CPU with one torch thread by default (a shared 2-core machine); the first 5 pairs give a
time estimate for the rest. Examples::

    .venv/bin/python benchmarks/explain_checks.py sanity --methods xssab --pairs 200
    .venv/bin/python benchmarks/explain_checks.py sanity --methods corrrise --pairs 40 --n-masks 200
    .venv/bin/python benchmarks/explain_checks.py pointing --pairs 100 --train-seconds 180 --control
"""
from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xcos_lightning.datamodules.pairs_file import load_pair_set
from xcos_lightning.datamodules.synthetic import render_all
from xcos_lightning.datamodules.synthetic_faces import _N_UNIFORMS, SyntheticFaces, _rng
from xcos_lightning.explain import parameter_randomisation_test, randomised_copy
from xcos_lightning.explain.base import Explainer
from xcos_lightning.explain.registry import build_explainer
from xcos_lightning.io.checkpoint import part_config
from xcos_lightning.io.spec import load_model
from xcos_lightning.metrics.verification import equal_error_rate
from xcos_lightning.models import CosFace, XCosModel, create_backbone

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("XCOS_SHARED", REPO.parent / "shared"))
MASK_METHODS = ("corrrise", "rise", "srise")


def make_explainer(name: str, model: nn.Module, args: argparse.Namespace, threshold: float) -> Explainer:
    kwargs: dict = {"threshold": threshold}
    if name in MASK_METHODS:
        kwargs.update(n_masks=args.n_masks, fill=args.fill)
    return build_explainer(name, model, **kwargs)


class Progress:
    """Prints elapsed time and, after ``estimate_after`` pairs, the projected total."""

    def __init__(self, label: str, total: int, estimate_after: int = 5) -> None:
        self.label, self.total, self.estimate_after = label, total, estimate_after
        self.start, self.estimated = time.perf_counter(), False

    def update(self, done: int) -> None:
        elapsed = time.perf_counter() - self.start
        if self.estimate_after <= done < self.total and not self.estimated:
            self.estimated = True
            print(f"  {self.label}: {done} pairs in {elapsed:.1f} s -> estimated {elapsed / done * self.total:.0f} s "
                  f"for {self.total} pairs", flush=True)
        if done == self.total:
            print(f"  {self.label}: {done} pairs in {elapsed:.1f} s", flush=True)


def cosines(model: nn.Module, img_a: Tensor, img_b: Tensor, batch: int = 32) -> Tensor:
    with torch.no_grad():
        return torch.cat([F.cosine_similarity(model(a), model(b), dim=1)
                          for a, b in zip(img_a.split(batch), img_b.split(batch))])


def sanity(args: argparse.Namespace) -> None:
    model = load_model(args.model).eval()
    pair_set = load_pair_set(args.data)
    genuine = [i for i, same in enumerate(pair_set.labels) if same][:args.pairs]
    impostor = [i for i, same in enumerate(pair_set.labels) if not same][:args.pairs]
    start = time.perf_counter()
    items = [pair_set[i] for i in genuine + impostor]
    img_a, img_b = (torch.stack([item[k] for item in items]) for k in ("img_a", "img_b"))
    scores = cosines(model, img_a, img_b)
    labels = torch.tensor([True] * len(genuine) + [False] * len(impostor))
    eer, threshold = equal_error_rate(scores, labels)
    img_a, img_b = img_a[:len(genuine)], img_b[:len(genuine)]
    calibration = torch.cat([img_a[:32], img_b[:32]])
    random_model = randomised_copy(model, seed=args.seed, calibration=calibration)
    random_scores = cosines(random_model, img_a, img_b)
    print(f"model {args.model}; {len(genuine)} genuine pairs of {args.data} (+ {len(impostor)} impostor pairs for "
          f"the threshold), loaded in {time.perf_counter() - start:.1f} s; EER {eer:.3f} at threshold "
          f"{threshold:.4f}; genuine cosine trained {scores[:len(genuine)].mean():.3f}, random copy "
          f"{random_scores.mean():.3f} +- {random_scores.std():.3f} (input-dependent: not all 1)", flush=True)

    rows = []
    for name in args.methods.split(","):
        progress, corr = Progress(name, len(genuine)), []
        for s in range(0, len(genuine), args.pair_batch):
            pair = slice(s, s + args.pair_batch)
            corr.append(parameter_randomisation_test(lambda m: make_explainer(name, m, args, threshold), model,
                                                     img_a[pair], img_b[pair], random_model=random_model))
            progress.update(min(s + args.pair_batch, len(genuine)))
        values = torch.cat(corr)
        q25, q50, q75 = values.quantile(torch.tensor([0.25, 0.5, 0.75])).tolist()
        setting = f"N={args.n_masks}, fill {args.fill}" if name in MASK_METHODS else f"threshold {threshold:.3f}"
        rows.append(f"| {name} ({setting}) | {len(values)} | {q50:.3f} | {q25:.3f} .. {q75:.3f} "
                    f"| {values.mean():.3f} | {'yes' if q50 < 0.3 else 'no'} "
                    f"| {time.perf_counter() - progress.start:.0f} s |")
    print("\n| method | pairs | median Spearman (trained vs random) | quartiles | mean | < 0.3 | wall time |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


def train_synthetic_model(faces: SyntheticFaces, identities: int, args: argparse.Namespace) -> nn.Module:
    """A face model of identities ``[0, identities)``: ``--trunk`` + grid head, CosFace, ``--train-seconds``."""
    torch.manual_seed(args.seed)
    ids = torch.arange(identities).repeat_interleave(args.images_per_id)
    start = time.perf_counter()
    cache, _ = render_all(faces, ids, torch.arange(args.images_per_id).repeat(identities))
    print(f"rendered {len(ids)} training faces in {time.perf_counter() - start:.0f} s", flush=True)
    trunk_kwargs = {"channels": 32} if args.trunk == "tiny" else {"width_mult": args.width}
    backbone = create_backbone(args.trunk, **trunk_kwargs)
    head = CosFace(backbone.embedding_dim, identities, s=30.0, m=0.2)
    optimizer = torch.optim.SGD([*backbone.parameters(), *head.parameters()], lr=args.lr, momentum=0.9,
                                weight_decay=5e-4)
    backbone.train()
    steps, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < args.train_seconds:
        for group in optimizer.param_groups:  # cosine decay over the time budget
            group["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * elapsed / args.train_seconds))
        idx = torch.randint(len(ids), (64,))
        x = cache[idx].float() / 255
        flip = torch.rand(len(idx)) < 0.5
        x[flip] = x[flip].flip(-1)
        if args.cutout > 0:
            x = cutout(x, args.cutout)
        logits = head(backbone.embed(x), ids[idx])
        loss = F.cross_entropy(logits, ids[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
        if steps % 200 == 0:
            print(f"  step {steps}, {elapsed:.0f} s: loss {loss.item():.3f}, batch accuracy "
                  f"{(logits.argmax(1) == ids[idx]).float().mean():.2f}", flush=True)
    print(f"trained {args.trunk} for {steps} steps of 64 faces in {time.perf_counter() - start:.0f} s", flush=True)
    return XCosModel(backbone).eval()


OCCLUDER_KINDS = ("sunglasses", "hand", "medical mask", "patch")


def occluder_kind(seed: int) -> int:
    """Index in ``OCCLUDER_KINDS`` of ``SyntheticFaces.occlude(img, seed)``'s occluder: its first draw.

    Mirrors ``SyntheticFaces._occluder`` (kind = floor(4 u) of the first uniform of stream (2, seed)).
    """
    return int(torch.rand(1, _N_UNIFORMS, generator=_rng(2, seed))[0, 0] * 4)


def cutout(x: Tensor, prob: float) -> Tensor:
    """Each image ``(B, 3, H, W)``, with probability ``prob``, gets one black rectangle (sides 10..40 px)."""
    b, _, h, w = x.shape
    size = torch.randint(10, 41, (b, 2))
    top, left = (torch.rand(b) * (h - size[:, 0])).long(), (torch.rand(b) * (w - size[:, 1])).long()
    rows, cols = torch.arange(h), torch.arange(w)
    inside = (((rows >= top[:, None]) & (rows < (top + size[:, 0])[:, None]))[:, :, None]
              & ((cols >= left[:, None]) & (cols < (left + size[:, 1])[:, None]))[:, None, :])
    return x * ~(inside & (torch.rand(b) < prob)[:, None, None])[:, None]


def save_checkpoint(model: XCosModel, path: Path) -> None:
    """A ``.ckpt`` that ``load_model`` reads (the layout ``train.py`` writes; no attention)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"hyper_parameters": {"backbone": part_config(model.backbone), "xcos": False},
                "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)


def render_pairs(faces: SyntheticFaces, pairs: list) -> tuple[Tensor, Tensor, Tensor]:
    """(faces A, faces B, genuine flags) of ``(id_a, img_a, id_b, img_b, genuine)`` pairs."""
    a, _ = faces.render_batch(torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs]))
    b, _ = faces.render_batch(torch.tensor([p[2] for p in pairs]), torch.tensor([p[3] for p in pairs]))
    return a, b, torch.tensor([p[4] for p in pairs])


def pointing(args: argparse.Namespace) -> None:
    faces = SyntheticFaces(args.train_ids + args.test_ids, seed=args.seed, occluder_prob=0.0)
    if args.model:
        model = load_model(args.model).eval()
    else:
        model = train_synthetic_model(faces, args.train_ids, args)
        if args.save:
            save_checkpoint(model, args.save)
            print(f"saved the trained model to {args.save} (reuse it with --model)")
    held_out = range(args.train_ids, args.train_ids + args.test_ids)
    a, b, same = render_pairs(faces, faces.verification_pairs(held_out, 400, seed=args.seed + 1))
    eer, threshold = equal_error_rate(cosines(model, a, b), same)
    print(f"held-out verification ({args.test_ids} identities, 400 pairs): EER {eer:.3f} at threshold "
          f"{threshold:.4f}", flush=True)

    pairs = [p for p in faces.verification_pairs(held_out, 4 * args.pairs, seed=args.seed + 2) if p[4]][:args.pairs]
    img_a, clean_b, _ = render_pairs(faces, pairs)
    occluded = [faces.occlude(img, seed=i) for i, img in enumerate(clean_b)]
    img_b, masks = torch.stack([o[0] for o in occluded]), torch.stack([o[1] for o in occluded])
    kinds = torch.tensor([occluder_kind(i) for i in range(len(pairs))])
    clean, occ = cosines(model, img_a, clean_b), cosines(model, img_a, img_b)
    print(f"{len(pairs)} genuine pairs, occluder in B: mean cosine {clean.mean():.3f} clean -> {occ.mean():.3f} "
          f"occluded; occluders cover {masks.float().mean():.1%} of B on average; kinds "
          f"{dict(zip(OCCLUDER_KINDS, torch.bincount(kinds, minlength=4).tolist()))}", flush=True)
    # Pointing-game tolerance (Zhang et al.): also count peaks within --tolerance px of the occluder.
    near = F.max_pool2d(masks[:, None].float(), 2 * args.tolerance + 1, stride=1, padding=args.tolerance)[:, 0] > 0
    chance = f"{masks.float().mean():.1%} | {near.float().mean():.1%} |"
    rows = [f"| uniformly random peak (mean occluder area) | genuine | {chance} | | |"]
    controls = [("genuine", img_a), ("control: A = B unoccluded", clean_b)] if args.control else [("genuine", img_a)]
    for name in ["random", *args.methods.split(",")]:
        for label, faces_a in controls:
            progress, hits = Progress(f"{name}, {label}", len(pairs)), []
            with make_explainer(name, model, args, threshold) as explainer:
                for s in range(0, len(pairs), args.pair_batch):
                    batch = slice(s, s + args.pair_batch)
                    dis = explainer(faces_a[batch], img_b[batch]).dis_b.flatten(1)
                    peak, found = dis.argmax(1, keepdim=True), dis.amax(1) > 0
                    inside = [m[batch].flatten(1).gather(1, peak)[:, 0] & found for m in (masks, near)]
                    hits.append(torch.stack(inside, 1))
                    progress.update(min(s + args.pair_batch, len(pairs)))
            hit = torch.cat(hits).float()
            setting = f"N={args.n_masks}, fill {args.fill}" if name in MASK_METHODS else f"threshold {threshold:.3f}"
            by_kind = ", ".join(f"{kind} {hit[kinds == k, 0].mean():.0%}" for k, kind in enumerate(OCCLUDER_KINDS)
                                if (kinds == k).any())
            rows.append(f"| {name} ({setting}) | {label} | {hit[:, 0].mean():.1%} | {hit[:, 1].mean():.1%} "
                        f"| {'yes' if hit[:, 0].mean() >= 0.8 else 'no'} | {by_kind} "
                        f"| {time.perf_counter() - progress.start:.0f} s |")
    print(f"\n| method | pairs | max of dissimilarity(B) inside the occluder | within {args.tolerance} px of it "
          "| >= 80 % (inside) | inside, by occluder kind | wall time |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="check", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--methods", default="corrrise,xssab", help="comma-separated explainers")
    common.add_argument("--n-masks", type=int, default=500, help="N of the mask methods (default 500)")
    common.add_argument("--fill", type=lambda v: v if v == "partner" else float(v), default=0.0,
                        help="value of masked pixels (default 0, black), or 'partner': the other face's pixels")
    common.add_argument("--pair-batch", type=int, default=4, help="pairs per explainer call (default 4)")
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--threads", type=int, default=1)
    s = sub.add_parser("sanity", parents=[common], help="parameter randomisation on LFW")
    s.add_argument("--model", default=f"mobilefacenet:{SHARED / 'weights/mobilefacenet_128d.pt'}")
    s.add_argument("--data", default=f"lfw:{SHARED / 'data/lfw'}")
    s.add_argument("--pairs", type=int, default=200, help="first genuine pairs (default 200)")
    p = sub.add_parser("pointing", parents=[common], help="pointing game on synthetic occluders")
    p.add_argument("--model", default=None, help="model SPEC (default: train a small one here)")
    p.add_argument("--pairs", type=int, default=100, help="genuine held-out pairs (default 100)")
    p.add_argument("--train-ids", type=int, default=100, help="training identities (default 100)")
    p.add_argument("--test-ids", type=int, default=100, help="held-out identities (default 100)")
    p.add_argument("--images-per-id", type=int, default=20)
    p.add_argument("--trunk", default="tiny", help="tiny | mobilefacenet (default tiny)")
    p.add_argument("--width", type=float, default=0.5, help="MobileFaceNet width multiplier (default 0.5)")
    p.add_argument("--train-seconds", type=float, default=180.0)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--cutout", type=float, default=0.0,
                   help="probability of a black rectangle on each training face (default 0)")
    p.add_argument("--save", type=Path, default=None, help="write the trained model here (.ckpt)")
    p.add_argument("--control", action="store_true",
                   help="also explain the occluded B against its own unoccluded image (no natural variation)")
    p.add_argument("--tolerance", type=int, default=8,
                   help="also count peaks within this many px of the occluder (default 8)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    (sanity if args.check == "sanity" else pointing)(args)
    print(f"\ntotal wall time {time.perf_counter() - start:.0f} s; torch threads {torch.get_num_threads()}; "
          f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
