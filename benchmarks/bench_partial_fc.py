"""Partial FC vs a full FC replicated under DDP: per-rank head memory and bytes sent per step, and the host
syncs and collectives of one XCosModule training step.

    python benchmarks/bench_partial_fc.py costs      # the accounting (models.partial_fc.head_cost) at scale
    python benchmarks/bench_partial_fc.py measure    # the same quantities measured on 2 CPU ranks (gloo)
    python benchmarks/bench_partial_fc.py steps [--head full|partial] [--devices 2]  # syncs/collectives per step

``measure`` runs one training step of each head on 2 processes and reads (a) the bytes of the head's
tensors on each rank (centres, their gradient, SGD momentum) and (b) every collective the step issues,
from ``torch.profiler`` events with their input shapes, turned into bytes sent per rank by the ring
formulas of :class:`~xcos_lightning.models.partial_fc.HeadCost`; the full FC's traffic is DDP's gradient
all-reduce of a module holding only the head. ``steps`` fits the demo config's model (MobileFaceNet
width 0.5, grid 32, xCos, ArcFace s=32 m=0.3, 32 pairs per rank, clip 5) with Lightning DDP on CPU and
counts, per training step of rank 0 (steps 3-6 under the profiler): host syncs (``aten::item``,
``aten::_local_scalar_dense``, ``aten::is_nonzero``) and collectives (``gloo:*`` / ``c10d::*`` events).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.profiler import ProfilerActivity, profile

from xcos_lightning.models.margins import ArcFace
from xcos_lightning.models.partial_fc import PartialArcFace, head_cost

SYNCS = ("aten::item", "aten::_local_scalar_dense", "aten::is_nonzero")
GIB = 1024 ** 3


def _human(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def costs(args) -> None:
    print(f"D = {args.dim}, {args.batch} images per rank, float32, SGD momentum; sample_rate as given\n")
    print("| identities | ranks | full FC: centres+grad+momentum / rank | full FC: sent / rank / step "
          "| Partial FC: sample_rate | centres+grad+momentum / rank | logits (x3) / rank | sent / rank / step |")
    print("|---|---|---|---|---|---|---|---|")
    for classes, rate in ((93_431, 1.0), (2_059_906, 0.2), (10_000_000, 0.1)):
        for world in (8, 16, 64):
            full = head_cost(classes, args.dim, world, args.batch, partial=False)
            part = head_cost(classes, args.dim, world, args.batch, partial=True, sample_rate=rate)
            print(f"| {classes:,} | {world} | {_human(full.parameters)} | {_human(full.communicated)} | {rate} "
                  f"| {_human(part.parameters)} | {_human(part.logits)} | {_human(part.communicated)} |")


def _sent_bytes(events) -> float:
    """Bytes one rank sends for the profiled collectives (ring algorithms), from their input shapes."""
    world = dist.get_world_size()
    ring = (world - 1) / world
    total = 0.0
    for e in events:
        name = e.name.lower()
        if not (name.startswith("gloo:") or name.startswith("c10d::")) or not e.input_shapes:
            continue
        numel = sum(math.prod(s) for s in e.input_shapes if s)
        size = numel * 4  # float32, except the int64 labels (counted at 4 bytes: 0.5 kB short at 128 labels)
        if "all_reduce" in name or "allreduce" in name:
            total += 2 * ring * size
        elif "all_gather" in name or "allgather" in name:
            total += ring * size * world
        elif "reduce_scatter" in name:
            total += ring * size
    return total


def _origin(stack: list[str]) -> str:
    """Who called: the innermost frame (stacks list it first) in xcos_lightning, lightning, torch.optim or DDP."""
    for frame in stack:
        for marker, name in (("xcos_lightning/", None), ("lightning/", "lightning"), ("torch/optim/", "torch.optim"),
                             ("torch/nn/parallel/", "DDP"), ("torch/autograd/", "DDP (gradient buckets, autograd)")):
            if marker in frame:
                return name or "xcos_lightning/" + frame.split("xcos_lightning/")[-1]
    return "other"


def _measure_rank(rank: int, world: int, store: str, classes: int, dim: int, batch: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    emb = torch.randn(batch, dim, requires_grad=True)
    labels = torch.randint(0, classes, (batch,))
    rows = {}
    for kind in ("full", "partial"):
        if kind == "full":
            head = torch.nn.parallel.DistributedDataParallel(ArcFace(dim, classes))
            params = list(head.parameters())
            step = lambda: torch.nn.functional.cross_entropy(head(emb, labels), labels)  # noqa: E731
        else:
            head = PartialArcFace(dim, classes)
            head.shard()
            params = list(head.parameters())
            step = lambda: head.loss(emb, labels)[0]  # noqa: E731
        opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
        step().backward()
        opt.step()  # momentum exists from here on
        opt.zero_grad(set_to_none=False)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            step().backward()
        held = sum(p.numel() * 4 * 2 for p in params) + sum(
            s["momentum_buffer"].numel() * 4 for s in opt.state.values())
        rows[kind] = {"memory": held, "sent": _sent_bytes(prof.events()),
                      "accounted": head_cost(classes, dim, world, batch, partial=kind == "partial")}
    if rank == 0:
        torch.save(rows, out)
    dist.destroy_process_group()


def measure(args) -> None:
    print(f"2 CPU processes (gloo), D = {args.dim}, {args.batch} embeddings per rank, one step\n")
    print("| identities | head | measured centres+grad+momentum / rank | accounted | measured sent / rank "
          "| accounted (gloo: all-reduce for the reduce-scatter) |")
    print("|---|---|---|---|---|---|")
    for classes in args.classes:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "rows.pt")
            mp.spawn(_measure_rank, args=(2, os.path.join(tmp, "store"), classes, args.dim, args.batch, out),
                     nprocs=2, join=True)
            rows = torch.load(out, weights_only=False)
        for kind, row in rows.items():
            acc = row["accounted"]
            # gloo has no reduce-scatter: the embeddings' gradient is all-reduced (twice a reduce-scatter's bytes)
            extra = 0.5 * args.batch * 2 * args.dim * 4 if kind == "partial" else 0
            print(f"| {classes:,} | {kind} | {_human(row['memory'])} | {_human(acc.parameters)} "
                  f"| {_human(row['sent'])} | {_human(acc.communicated + extra)} |")


def steps(args) -> None:
    import lightning as L
    from functools import partial

    from xcos_lightning.models import GridBackbone
    from xcos_lightning.models.partial_fc import PartialArcFace as PartialHead
    from xcos_lightning.module import XCosModule
    from torch.utils.data import DataLoader

    torch.set_num_threads(1)
    L.seed_everything(0, verbose=False)
    head = partial(PartialHead, s=32.0, m=0.3) if args.head == "partial" else partial(ArcFace, s=32.0, m=0.3)
    module = XCosModule(GridBackbone("mobilefacenet", grid_channels=32, trunk_kwargs={"width_mult": 0.5}),
                        num_classes=200, head=head)
    g = torch.Generator().manual_seed(0)
    pairs = 32
    batches = [{"img_a": torch.rand(pairs, 3, 112, 112, generator=g), "img_b": torch.rand(pairs, 3, 112, 112, generator=g),
                "label_a": torch.randint(0, 200, (pairs,), generator=g),
                "label_b": torch.randint(0, 200, (pairs,), generator=g)} for _ in range(2)]
    loader = DataLoader(batches * 4 * args.devices, batch_size=None)  # Lightning gives each rank its share

    class Count(L.Callback):
        def __init__(self):
            self.prof, self.steps = None, 0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 2:
                # verbose: Python frames on every event (the callers of item() and of the collectives)
                self.prof = profile(activities=[ProfilerActivity.CPU], with_stack=True,
                                    experimental_config=torch._C._profiler._ExperimentalConfig(verbose=True))
                self.prof.__enter__()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if self.prof is not None:
                self.steps += 1
            if batch_idx != 5 or self.prof is None:
                return
            self.prof.__exit__(None, None, None)
            found = Counter()
            for e in self.prof.events():
                # a collective appears as c10d::op and as its gloo:op implementation: count the c10d:: event
                # (DDP's gradient buckets only show as gloo:all_reduce from the autograd engine)
                # every item() / bool() of a tensor reads it through one aten::_local_scalar_dense
                kind = ("sync" if e.name == "aten::_local_scalar_dense" else
                        "collective" if e.name.startswith("c10d::") else None)
                if kind is None:
                    continue
                found[(kind, _origin(e.stack), e.name)] += 1
            if trainer.is_global_zero:
                print(f"head {args.head}, {args.devices} ranks, per training step (mean of {self.steps}):")
                for (kind, origin, name), n in sorted(found.items()):
                    print(f"  {kind:10s} {n / self.steps:5.2f}  {name:24s} from {origin}")
                for kind in ("sync", "collective"):
                    ours = sum(n for (k, o, _), n in found.items() if k == kind and o.startswith("xcos_lightning"))
                    print(f"  {kind}s from xcos_lightning: {ours / self.steps:.2f} per step")
            self.prof = None

    trainer = L.Trainer(accelerator="cpu", devices=args.devices, strategy="ddp" if args.devices > 1 else "auto",
                        max_steps=7, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, gradient_clip_val=5.0, callbacks=[Count()],
                        default_root_dir=tempfile.mkdtemp())
    trainer.fit(module, train_dataloaders=loader)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("costs")
    c.add_argument("--dim", type=int, default=1568, help="embedding size (the 32x7x7 grid: 1,568)")
    c.add_argument("--batch", type=int, default=128, help="images per rank and step")
    m = sub.add_parser("measure")
    m.add_argument("--classes", type=int, nargs="+", default=[2_000, 20_000])
    m.add_argument("--dim", type=int, default=1568)
    m.add_argument("--batch", type=int, default=64)
    s = sub.add_parser("steps")
    s.add_argument("--head", choices=["full", "partial"], default="full")
    s.add_argument("--devices", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    {"costs": costs, "measure": measure, "steps": steps}[args.command](args)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
