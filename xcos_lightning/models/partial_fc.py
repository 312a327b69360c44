"""Partial FC: a margin head whose class centres are sharded across the DDP ranks (An et al., 2022).

Rank ``r`` of ``W`` holds the contiguous classes ``[r * C // W, (r + 1) * C // W)``. Each step the
embeddings and labels of the whole global batch are all-gathered, every rank scores them against its own
centres (all of them, or with ``sample_rate < 1`` its positives plus random negatives), and the softmax
cross-entropy is computed across ranks: one all-reduce of the row maxima, one of the row sums of
``exp`` fused with the target logit. No rank ever holds the ``(N, C)`` logits or the ``(C, D)`` matrix.

The centres are left out of DDP's gradient all-reduce (each rank's are different parameters) and carry
their own optimizer state, sharded the same way. ``state_dict`` holds the full ``(C, D)`` matrix
(gathered on save, every rank taking part), and loading keeps this rank's rows, so a checkpoint resumes
on any number of ranks. A world size of 1 is the plain full FC.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from xcos_lightning.models.margins import margin_target

# Centres are drawn in chunks of this many classes, each from its own seed: a shard draws only its chunks
# and every world size gets the same initial matrix.
_INIT_CHUNK = 1 << 16


def _world(group) -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(group), dist.get_world_size(group)
    return 0, 1


def class_range(num_classes: int, rank: int, world_size: int) -> tuple[int, int]:
    """Classes ``[start, end)`` held by ``rank``: contiguous, sizes differing by at most one."""
    return rank * num_classes // world_size, (rank + 1) * num_classes // world_size


class _GatherRows(torch.autograd.Function):
    """All-gather ``(B, ...)`` from every rank into ``(W * B, ...)`` (rank order); equal ``B`` on every rank.

    Backward: every rank's loss is the same global loss, so the gradient for this rank's rows is the sum
    over ranks of their gradient for those rows (a reduce-scatter), times ``W``: DDP then averages the
    backbone gradients over ranks, and the product is the full-batch gradient."""

    @staticmethod
    def forward(ctx, x: Tensor, group) -> Tensor:
        rank, world = _world(group)
        ctx.group, ctx.rank, ctx.world = group, rank, world
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad = grad.contiguous()
        if dist.get_backend(ctx.group) == "nccl":
            out = grad.new_empty((grad.shape[0] // ctx.world, *grad.shape[1:]))
            dist.reduce_scatter_tensor(out, grad, group=ctx.group)
        else:  # gloo has no reduce-scatter: all-reduce and keep this rank's rows
            dist.all_reduce(grad, group=ctx.group)
            out = grad.chunk(ctx.world)[ctx.rank]
        return out * ctx.world, None


class _DistributedCrossEntropy(torch.autograd.Function):
    """Mean softmax cross-entropy of logits split by columns across ranks.

    ``logits`` ``(N, k)``: this rank's columns; ``target`` ``(N,)``: the target's column here, -1 where it
    lives on another rank. Returns the loss (identical on every rank) and the fraction of rows whose target
    logit is the global maximum (not differentiable)."""

    @staticmethod
    def forward(ctx, logits: Tensor, target: Tensor, group):
        distributed = _world(group)[1] > 1
        peak = logits.max(dim=1).values
        if distributed:
            dist.all_reduce(peak, op=dist.ReduceOp.MAX, group=group)
        shifted = logits - peak[:, None]
        exp = shifted.exp()
        here = target >= 0
        column = target.clamp(min=0)[:, None]
        target_logit = torch.where(here, shifted.gather(1, column).squeeze(1), torch.zeros_like(peak))
        sums = torch.stack([exp.sum(dim=1), target_logit], dim=1)
        if distributed:
            dist.all_reduce(sums, group=group)  # sum of exp over all columns; the one rank's target logit
        sum_exp, target_logit = sums.unbind(1)
        exp /= sum_exp[:, None]
        ctx.save_for_backward(exp, column, here)
        correct = (target_logit >= 0).float().mean()  # shifted target logit = 0 where it is the maximum
        ctx.mark_non_differentiable(correct)
        return (sum_exp.log() - target_logit).mean(), correct

    @staticmethod
    def backward(ctx, grad_loss: Tensor, grad_correct: Tensor):
        prob, column, here = ctx.saved_tensors
        grad = prob.scatter_add(1, column, -here.to(prob.dtype)[:, None])
        return grad * (grad_loss / prob.shape[0]), None, None


@dataclass(frozen=True)
class HeadCost:
    """Per-rank cost of a margin head for one training step, in bytes.

    ``parameters``: centres + their gradient + optimizer state (``state_copies`` per centre: 1 for SGD
    momentum). ``logits``: the float32 logits, their ``exp`` kept for backward and the gradient (3 copies).
    ``communicated``: what one rank sends for the head, ring collectives: an all-reduce of ``n`` bytes sends
    ``2 n (W - 1) / W``, an all-gather or reduce-scatter of ``n`` bytes in all sends ``n (W - 1) / W``."""

    parameters: int
    logits: int
    communicated: int


def head_cost(num_classes: int, embedding_dim: int, world_size: int, batch_per_rank: int, partial: bool,
              sample_rate: float = 1.0, state_copies: int = 1) -> HeadCost:
    """What a full FC replicated under DDP (``partial=False``: every rank holds the whole matrix and DDP
    all-reduces its gradient) or :class:`PartialFC` (NCCL: a reduce-scatter in backward) costs per rank,
    from the shapes its code moves; float32 centres, int64 labels."""
    w, d, c = world_size, embedding_dim, num_classes
    ring = (w - 1) / w
    if not partial:
        rows, scored, n = c, c, batch_per_rank
        sent = 2 * ring * c * d * 4
    else:
        rows, n = math.ceil(c / w), batch_per_rank * w
        scored = min(rows, max(math.ceil(sample_rate * rows), n))
        # all-gather of embeddings and labels, all-reduce of the maxima and of (sum exp, target logit),
        # reduce-scatter of the embeddings' gradient
        sent = ring * n * (d * 4 + 8) + 2 * ring * n * 4 * 3 + ring * n * d * 4
    return HeadCost(parameters=rows * d * 4 * (2 + state_copies), logits=3 * n * scored * 4, communicated=int(sent))


class PartialFC(nn.Module):
    """Class-sharded margin head; ``loss(embeddings, labels)`` as :class:`~xcos_lightning.models.MarginHead`.

    Args:
        embedding_dim: D of the embeddings.
        num_classes: training identities C (all ranks together).
        s, m1, m2, m3: scale and combined margin of :func:`~xcos_lightning.models.margins.margin_target`
            (ArcFace (1, 0.5, 0), CosFace (1, 0, 0.4)).
        sample_rate: fraction of this rank's classes scored per training step: its positives (classes of
            the global batch it holds) always, the rest drawn at random; at least the global batch size
            ``N`` classes (so every positive fits, and the draw needs no host sync). 1.0 scores every class.
        seed: seed of the initial centres (the same matrix for every world size) and of the draws (per
            step, rank and world size, so a resumed run draws as the uninterrupted one).
        process_group: ranks sharing the classes (default: all).

    The centres are created by :meth:`shard` (``XCosModule.setup`` calls it once the process group
    exists; until then they are on the meta device and take no memory) or by loading a state dict.
    """

    def __init__(self, embedding_dim: int, num_classes: int, s: float = 64.0, m1: float = 1.0, m2: float = 0.5,
                 m3: float = 0.0, sample_rate: float = 1.0, seed: int = 0, process_group=None) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample_rate={sample_rate}: choose a fraction in (0, 1]")
        self.embedding_dim, self.num_classes = embedding_dim, num_classes
        self.s, self.m1, self.m2, self.m3 = s, m1, m2, m3
        self.sample_rate, self.seed, self.group = sample_rate, seed, process_group
        self.rank, self.world_size = 0, 1
        self.class_start, self.class_end = 0, num_classes
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim, device="meta"))
        self.draws = 0  # sampled training steps so far (kept in the state dict)

    # ------------------------------------------------------------------ shards
    def shard(self) -> None:
        """Hold this rank's classes of the current process group: kept from the centres already held where
        they cover them (a state dict loaded before the group existed), else freshly initialized."""
        rank, world = _world(self.group)
        start, end = class_range(self.num_classes, rank, world)
        held = not self.weight.is_meta
        if held and (self.class_start, self.class_end) == (start, end):
            self.rank, self.world_size = rank, world
            return
        if held and self.class_start <= start and end <= self.class_end:
            rows = self.weight.detach()[start - self.class_start:end - self.class_start].clone()
        else:
            rows = self._initial_rows(start, end)
        self.rank, self.world_size, self.class_start, self.class_end = rank, world, start, end
        self.weight = nn.Parameter(rows)

    def _initial_rows(self, start: int, end: int) -> Tensor:
        """Rows ``[start, end)`` of the seeded ``N(0, 0.01^2)`` initial matrix, ``(end - start, D)``."""
        parts = []
        for chunk in range(start // _INIT_CHUNK, (end - 1) // _INIT_CHUNK + 1):
            lo = chunk * _INIT_CHUNK
            rows = min(_INIT_CHUNK, self.num_classes - lo)
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + chunk)
            block = torch.randn(rows, self.embedding_dim, generator=g) * 0.01
            parts.append(block[max(start - lo, 0):end - lo])
        return torch.cat(parts)

    def gather_rows(self, rows: Tensor) -> Tensor:
        """This rank's rows ``(end - start, ...)`` of a per-class tensor -> the full ``(C, ...)`` on every rank
        (a collective: every rank calls it)."""
        if self.world_size == 1:
            return rows
        longest = math.ceil(self.num_classes / self.world_size)
        padded = rows.new_zeros((longest, *rows.shape[1:]))
        padded[:rows.shape[0]] = rows
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded, group=self.group)
        sizes = [end - start for start, end in
                 (class_range(self.num_classes, r, self.world_size) for r in range(self.world_size))]
        return torch.cat([part[:n] for part, n in zip(parts, sizes)])

    def shard_rows(self, full: Tensor) -> Tensor:
        """This rank's rows of a full per-class tensor ``(C, ...)``."""
        return full[self.class_start:self.class_end]

    def is_class_tensor(self, t: Tensor) -> bool:
        """Whether ``t`` is per-class (centres, their momentum), full ``(C, D)`` or this rank's rows."""
        return t.ndim == 2 and t.shape[1] == self.embedding_dim and t.shape[0] in (
            self.num_classes, self.class_end - self.class_start)

    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.world_size > 1:
            destination[prefix + "weight"] = self.gather_rows(self.weight.detach())

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        key = prefix + "weight"
        full = state_dict.get(key)
        if full is not None and full.shape == (self.num_classes, self.embedding_dim):
            rows = self.shard_rows(full)
            if self.weight.is_meta:
                self.weight = nn.Parameter(torch.empty_like(rows))
            state_dict[key] = rows
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def get_extra_state(self) -> dict:
        return {"draws": self.draws}

    def set_extra_state(self, state: dict) -> None:
        self.draws = int(state["draws"])

    # ------------------------------------------------------------------- loss
    def _sample(self, local: Tensor, here: Tensor) -> tuple[Tensor | None, Tensor]:
        """Columns to score and each row's target column among them (-1: on another rank), on device."""
        rows = self.class_end - self.class_start
        target = torch.where(here, local, -1)
        keep = min(rows, max(math.ceil(self.sample_rate * rows), local.numel()))
        if not self.training or keep == rows:
            return None, target
        g = torch.Generator(device=local.device)
        g.manual_seed((self.seed * 1_000_003 + self.draws) * 4099 + self.world_size * 257 + self.rank)
        self.draws += 1
        score = torch.rand(rows, generator=g, device=local.device)
        positive = torch.zeros(rows, device=local.device).index_put_((local.clamp(0, rows - 1),), here.float(),
                                                                    accumulate=True)
        score = torch.where(positive > 0, 2.0, score)  # rand is < 1: positives rank first
        index = score.topk(keep).indices.sort().values
        column = torch.full((rows,), -1, dtype=torch.long, device=local.device)
        column[index] = torch.arange(keep, device=local.device)
        return index, torch.where(here, column[local.clamp(0, rows - 1)], -1)

    def loss(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Mean margin cross-entropy over the global batch and the fraction of it whose target logit is the
        largest scored one, both float32 scalars identical on every rank. ``embeddings`` ``(B, D)``, ``labels``
        ``(B,)`` in [0, C); the same ``B`` on every rank."""
        if self.weight.is_meta:
            raise RuntimeError("PartialFC has no centres yet: call shard() once the process group exists "
                               "(XCosModule.setup does) or load a state dict")
        # Margins need float32 near cos = +-1.
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            emb = F.normalize(embeddings.float(), dim=1)
            if self.world_size > 1:
                emb = _GatherRows.apply(emb, self.group)
                parts = [torch.empty_like(labels) for _ in range(self.world_size)]
                dist.all_gather(parts, labels.contiguous(), group=self.group)
                labels = torch.cat(parts)
            local = labels - self.class_start
            here = (local >= 0) & (local < self.class_end - self.class_start)
            index, target = self._sample(local, here)
            weight = self.weight if index is None else self.weight[index]
            cos = F.linear(emb, F.normalize(weight.float(), dim=1))
            column = target.clamp(min=0)[:, None]
            target_cos = cos.gather(1, column)
            margin = margin_target(target_cos, self.m1, self.m2, self.m3)
            cos = cos.scatter(1, column, torch.where(here[:, None], margin, target_cos))
            return _DistributedCrossEntropy.apply(cos * self.s, target, self.group)

    forward = loss

    def extra_repr(self) -> str:
        return (f"embedding_dim={self.embedding_dim}, num_classes={self.num_classes}, classes=[{self.class_start}, "
                f"{self.class_end}), s={self.s}, m=({self.m1}, {self.m2}, {self.m3}), sample_rate={self.sample_rate}")


class PartialArcFace(PartialFC):
    """:class:`PartialFC` with ArcFace's margin ``s * cos(theta + m)`` (defaults s=64, m=0.5)."""

    def __init__(self, embedding_dim: int, num_classes: int, s: float = 64.0, m: float = 0.5,
                 sample_rate: float = 1.0, seed: int = 0) -> None:
        super().__init__(embedding_dim, num_classes, s=s, m1=1.0, m2=m, m3=0.0, sample_rate=sample_rate, seed=seed)


class PartialCosFace(PartialFC):
    """:class:`PartialFC` with CosFace's margin ``s * (cos(theta) - m)`` (defaults s=64, m=0.4)."""

    def __init__(self, embedding_dim: int, num_classes: int, s: float = 64.0, m: float = 0.4,
                 sample_rate: float = 1.0, seed: int = 0) -> None:
        super().__init__(embedding_dim, num_classes, s=s, m1=1.0, m2=0.0, m3=m, sample_rate=sample_rate, seed=seed)
