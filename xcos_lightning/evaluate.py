"""Verification scores of any face model on a pair set (the engine of ``explain.py verify``).

Protocol (insightface): embed each image and its horizontal mirror, sum, L2-normalise, cosine. An xCos
model (anything with ``pair_scores``, i.e. ``XCosModel``) scores pairs itself, as in training validation:
``cos`` of its flip-summed grids and ``xcos``. A plain embedding model embeds each distinct image of a
:class:`PairSet` once (LFW's 12,000 pair slots hold 7,701 images), and so does an xCos model (its grids; the
pairs' S, W and xCos then come from the attention alone). Metrics come from ``metrics.verification``.
"""
from __future__ import annotations

import sys
from contextlib import nullcontext
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from xcos_lightning.datamodules.face_cache import DistinctImages, FaceCache
from xcos_lightning.datamodules.pair_set import PairSet
from xcos_lightning.models.fusion import fast_model


def embed(model: nn.Module, images: Tensor, flip: bool = True) -> Tensor:
    """L2-normalised embeddings ``(B, D)`` float32 of ``images`` ``(B, 3, H, W)`` RGB in [0, 1];
    with ``flip``, ``model(x) + model(mirror(x))`` in one forward pass before normalising."""
    if flip:
        plain, mirrored = model(torch.cat([images, images.flip(-1)])).float().chunk(2)
        return F.normalize(plain + mirrored, dim=1)
    return F.normalize(model(images).float(), dim=1)


def pair_scores(model: nn.Module, img_a: Tensor, img_b: Tensor, flip: bool = True) -> dict[str, Tensor]:
    """Scores ``(B,)`` in [-1, 1] of a batch of pairs: ``cos`` and, for xCos models, ``xcos``."""
    if hasattr(model, "pair_scores"):
        return {k: v.float() for k, v in model.pair_scores(img_a, img_b, flip_tta=flip).items()}
    emb_a, emb_b = embed(model, torch.cat([img_a, img_b]), flip).chunk(2)
    return {"cos": (emb_a * emb_b).sum(1)}


def faces_to_images(faces: Tensor, device: torch.device) -> Tensor:
    """uint8 ``(B, H, W, 3)`` -> float32 ``(B, 3, H, W)`` in [0, 1] on ``device`` (moved as uint8: 4x fewer
    bytes to copy), the same values as ``image_io.to_tensor``."""
    return faces.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)


def default_batch_size(device: torch.device | str) -> int:
    """Pairs per forward pass of evaluation on ``device`` (``2x`` faces, each with its mirror): 4 on a CPU,
    256 on a GPU (512 faces of 112 x 112 per forward, to keep it busy; not measured: no GPU was lent).

    Why so few on a CPU: larger forwards page-fault their activations in again. The folded MobileFaceNet with
    flip TTA on 768 LFW faces, 2-core AMD EPYC (``benchmarks/bench_eval.py --batch-sweep 768``, BENCHMARKS.md):
    with glibc's default allocator 4.03 ms per face at 8 faces per forward (3.1 k minor faults per pass) against
    7.02 at 16 and 13.99 at 128 (6.8 M faults); with ``cpu_allocator.retain_freed_memory`` (as the commands run)
    4.40 at 8, 5.02-5.04 at 16-32 (no faults) and 7.86 at 128 (2.2 M faults)."""
    return 256 if torch.device(device).type == "cuda" else 4


def grids_in_chunks(model: nn.Module, images: Tensor, flip: bool = True) -> Tensor:
    """``model.grid(images, flip_tta=flip)`` ``(B, C, h, w)`` of float32 ``images`` ``(B, 3, H, W)`` in [0, 1],
    ``2 * default_batch_size`` faces per forward (the training-time validation's loader batch is the training
    batch, far above a CPU's best forward size)."""
    step = 2 * default_batch_size(images.device)
    return torch.cat([model.grid(images[i:i + step], flip_tta=flip) for i in range(0, len(images), step)])


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s parameters (CPU for a model without any)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def forward_copy(model: nn.Module) -> nn.Module:
    """The model evaluation's forwards run: on a CPU ``fast_model(model, channels_last=False)``, BatchNorm folded
    (the same scores within float rounding; on the 2-core AMD EPYC 0.68x the time of the model as loaded at 128
    faces per forward, where channels-last gained nothing, alone 0.99x or on top of folding 0.69x:
    ``benchmarks/bench_eval.py --forward-variants``; 0.82x at the CPU's 8 faces per forward), elsewhere ``model``
    itself (prepared by ``prepare_for_device``; folding not measured)."""
    return fast_model(model, channels_last=False) if model_device(model).type == "cpu" else model


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def _batches(dataset: Dataset, batch_size: int, num_workers: int, device: torch.device, progress: bool,
             desc: str, unit: str) -> Iterator:
    """Batches of ``dataset`` in order, with a progress bar on stderr counting items."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    with tqdm(total=len(dataset), desc=desc, unit=unit, file=sys.stderr, disable=not progress,
              dynamic_ncols=True) as bar:
        for batch in loader:
            yield batch
            bar.update(len(batch["label"]) if isinstance(batch, dict) else len(batch))


@torch.inference_mode()
def per_distinct_image(fn, model: nn.Module, pair_set: PairSet, batch_size: int, num_workers: int = 0,
                       bf16: bool = False, progress: bool = False, desc: str = "faces",
                       cache: FaceCache | None = None) -> Tensor:
    """``fn(images)`` of every distinct face of ``pair_set``, once each, on the CPU, indexed by pair image
    (``2i``: side a of pair ``i``, ``2i + 1``: side b). ``fn``: float32 ``(B, 3, H, W)`` [0, 1] -> ``(B, ...)``,
    run on the device of ``model``'s parameters; ``batch_size`` counts pairs (2x faces per forward). With
    ``cache``, faces are read from / written to it (see :class:`DistinctImages`); on a CPU the faces it misses
    are decoded into it first, in ``num_workers`` workers, and the forwards run after: the forward uses every
    core, and one decoding worker beside it slowed LFW's forwards from 34.1 s to 45.2 s, for 4.2 s of decoding
    (0.54 ms per face on one core; cProfile of ``explain.py verify``, 2-core AMD EPYC; BENCHMARKS.md "Evaluation
    at the speed of the model")."""
    device, images = model_device(model), DistinctImages(pair_set, cache)
    if device.type == "cpu":
        images.fill(num_workers, progress=progress, desc=f"{desc}: decoding")
    out = None
    with tqdm(total=len(images), desc=desc, unit="img", file=sys.stderr, disable=not progress,
              dynamic_ncols=True) as bar:
        for rows, faces in images.batches(2 * batch_size, num_workers, pin_memory=device.type == "cuda"):
            with _autocast(device, bf16):
                value = fn(faces_to_images(faces, device)).float().cpu()
            if out is None:
                out = torch.empty((len(images), *value.shape[1:]), dtype=value.dtype)
            out[rows] = value
            bar.update(len(rows))
    return out[images.slot]


def embed_pairs(model: nn.Module, pair_set: PairSet, batch_size: int = 64, flip: bool = True,
                num_workers: int = 0, bf16: bool = False, progress: bool = True,
                desc: str = "embedding", cache: FaceCache | None = None) -> tuple[Tensor, Tensor]:
    """``(emb_a, emb_b)``: L2-normalised embeddings ``(N, D)`` float32 of both sides of every pair, on the CPU.

    ``model``: any embedding model ``(B, 3, H, W) [0, 1] -> (B, D)`` in eval mode; it runs on the device of
    its parameters, under bfloat16 autocast with ``bf16``. Each distinct image is embedded once (with its
    mirror when ``flip``); ``batch_size`` counts pairs (``2 * batch_size`` images per forward pass). With
    ``cache`` the decoded faces are read from / stored in it.
    """
    fast = forward_copy(model)
    emb = per_distinct_image(lambda x: embed(fast, x, flip), model, pair_set, batch_size, num_workers, bf16,
                             progress, desc, cache)
    return emb[0::2], emb[1::2]


@torch.inference_mode()
def grid_pair_scores(model: nn.Module, pair_set: PairSet, batch_size: int = 64, flip: bool = True,
                     num_workers: int = 0, bf16: bool = False, progress: bool = True,
                     desc: str = "scoring", cache: FaceCache | None = None) -> dict[str, Tensor]:
    """An xCos model's scores of every pair, each distinct image's grid computed once (LFW: 7,701 images, not
    12,000): ``{"cos": (N,), ["xcos": (N,)]}`` on the CPU, equal to :func:`pair_scores` pair by pair.

    ``model``: an ``XCosModel`` (``grid`` with flip TTA: the mirrored face's grid flipped back and added; and
    ``maps_from_grids``) in eval mode, on the device of its parameters.
    """
    fast = forward_copy(model)
    grids = per_distinct_image(lambda x: fast.grid(x, flip_tta=flip), model, pair_set, batch_size, num_workers,
                               bf16, progress, desc, cache)
    return scores_from_grids(model, grids[0::2], grids[1::2], max(256, 4 * batch_size), bf16)


@torch.inference_mode()
def scores_from_grids(model: nn.Module, grid_a: Tensor, grid_b: Tensor, batch_size: int = 256,
                      bf16: bool = False) -> dict[str, Tensor]:
    """``{"cos": (N,), ["xcos": (N,)]}`` on the CPU of pairs of grids ``(N, C, h, w)`` of an ``XCosModel``:
    cosine of the flattened grids and, with attention (``has_xcos``), the xCos score of ``maps_from_grids``
    (run on the model's device, ``batch_size`` pairs at a time: cheap next to the trunk)."""
    out = {"cos": F.cosine_similarity(grid_a.float().flatten(1), grid_b.float().flatten(1), dim=1).cpu()}
    if getattr(model, "has_xcos", False):
        device, xcos = model_device(model), []
        for start in range(0, len(grid_a), batch_size):
            a, b = (g[start:start + batch_size].to(device) for g in (grid_a, grid_b))
            with _autocast(device, bf16):
                xcos.append(model.maps_from_grids(a, b)[2].float().cpu())
        out["xcos"] = torch.cat(xcos)
    return out


@torch.inference_mode()
def score_pair_set(model: nn.Module, pair_set: Dataset, batch_size: int = 64, flip: bool = True,
                   num_workers: int = 0, bf16: bool = False, progress: bool = True,
                   desc: str = "scoring", cache: FaceCache | None = None) -> dict[str, Tensor]:
    """Scores of every pair, in pair order, on the CPU: ``{"cos": (N,), ["xcos": (N,)], "label": (N,) bool}``.

    ``model``: an embedding model or an ``XCosModel`` (see :func:`pair_scores`) in eval mode, run on the device
    of its parameters, under bfloat16 autocast with ``bf16``. ``pair_set``: a :class:`PairSet` or any dataset
    of dicts ``img_a``, ``img_b``, ``label`` (scored pair by pair: nothing to deduplicate or cache).
    ``batch_size`` counts pairs. ``cache``: decoded faces of a PairSet read from / stored in it. Progress goes
    to stderr.
    """
    if isinstance(pair_set, PairSet) and not hasattr(model, "pair_scores"):
        emb_a, emb_b = embed_pairs(model, pair_set, batch_size, flip, num_workers, bf16, progress, desc, cache)
        return {"cos": (emb_a * emb_b).sum(1), "label": torch.from_numpy(pair_set.labels.copy())}
    if isinstance(pair_set, PairSet) and hasattr(model, "maps_from_grids"):
        scores = grid_pair_scores(model, pair_set, batch_size, flip, num_workers, bf16, progress, desc, cache)
        return {**scores, "label": torch.from_numpy(pair_set.labels.copy())}
    device, scores, labels = model_device(model), {}, []
    for batch in _batches(pair_set, batch_size, num_workers, device, progress, desc, "pair"):
        img_a, img_b = (batch[k].to(device, non_blocking=True) for k in ("img_a", "img_b"))
        with _autocast(device, bf16):
            for kind, value in pair_scores(model, img_a, img_b, flip).items():
                scores.setdefault(kind, []).append(value.float().cpu())
        labels.append(batch["label"].bool())
    return {**{k: torch.cat(v) for k, v in scores.items()}, "label": torch.cat(labels)}
