"""Runs PartialFC on ``world`` CPU processes (gloo) and saves what each rank computed, for the tests to
compare with a single-process full FC: ``python head_worker.py CASE WORLD OUT_DIR``.

Every rank draws the same seeded global batch and keeps its slice of it; the centres are the seeded
initial matrix scaled to unit-norm rows (gradients of order 1, so 1e-5 is a tight absolute bound).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from xcos_lightning.models.partial_fc import PartialFC

D, C, B = 16, 37, 6  # 37 classes: uneven shards (18 + 19)
MARGINS = {"arcface": (64.0, 1.0, 0.5, 0.0), "cosface": (64.0, 1.0, 0.0, 0.4), "combined": (32.0, 1.0, 0.3, 0.2)}


def global_batch(world: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(world * B, D, generator=g), torch.randint(0, C, (world * B,), generator=g)


def unit_rows(head: PartialFC) -> None:
    with torch.no_grad():
        head.weight.copy_(head.weight / head.weight.norm(dim=1, keepdim=True))


def _run(rank: int, world: int, case: str, out: Path) -> None:
    dist.init_process_group("gloo", init_method=f"file://{out / 'store'}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    emb_all, labels_all = global_batch(world)
    rows = slice(rank * B, (rank + 1) * B)
    result = {}
    if case == "exact":
        for name, (s, m1, m2, m3) in MARGINS.items():
            head = PartialFC(D, C, s=s, m1=m1, m2=m2, m3=m3)
            head.shard()
            unit_rows(head)
            emb = emb_all[rows].clone().requires_grad_(True)
            loss, acc = head.loss(emb, labels_all[rows])
            loss.backward()
            result[name] = {"loss": loss.detach(), "acc": acc, "emb_grad": emb.grad,
                            "weight_grad": head.gather_rows(head.weight.grad),
                            "weight": head.gather_rows(head.weight.detach())}
    elif case == "sampled":
        head = PartialFC(D, 400, s=32.0, sample_rate=0.1, seed=3)
        head.shard()
        labels = torch.randint(0, 400, (world * B,), generator=torch.Generator().manual_seed(2))
        local = labels - head.class_start
        here = (local >= 0) & (local < head.class_end - head.class_start)
        draws = []
        for _ in range(3):
            index, target = head._sample(local, here)
            draws.append({"index": index, "target": target})
        head.draws = 0
        again = head._sample(local, here)[0]
        # Train the embeddings of a small fixed problem with sampled negatives.
        emb = torch.nn.Parameter(emb_all.clone())
        opt = torch.optim.SGD([emb, *head.parameters()], lr=0.5)
        losses = []
        for _ in range(30):
            loss, _ = head.loss(emb[rows], labels[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        result = {"labels": labels, "start": head.class_start, "end": head.class_end, "draws": draws,
                  "again": again, "losses": losses, "keep": draws[0]["index"].numel()}
    torch.save(result, out / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    case, world, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_run, args=(world, case, out), nprocs=world, join=True)
