"""The call shape every explainer shares: a batch of pairs in, a ``PairExplanation`` out.

Each method produces, per image, non-negative evidence for similarity (``pos``) and dissimilarity
(``neg``), unnormalised (``SideMaps``). Most methods get both from one signed map (its positive and
negative parts); Grad-CAM++ and xSSAB compute them separately. The base class normalises them the same
way for every method.

Pixel order (what every faithfulness protocol uses, ``PairExplanation.order_keys``): similarity ranks
the signed map ``raw`` descending, dissimilarity ranks it ascending, so each map gives one total order
of all pixels and not only of its positive part; ties are broken by a permutation seeded per pair
(``pair_seed``), never by the pixels' raster order.
"""
from __future__ import annotations

import hashlib
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from xcos_lightning.errors import DataFormatError, ModelSpecError

EmbedFn = Callable[[Tensor], Tensor]


def pair_seed(seed: int, index: int, stream: str) -> int:
    """A 63-bit generator seed for one pair, from the run's ``seed``, the pair's data-set ``index`` and a
    ``stream`` name (``"ties"``, ``"random/a"``, ...): the same pair gets the same numbers whatever else ran
    before it, in whichever batch or process, and different streams are unrelated."""
    digest = hashlib.blake2b(f"{int(seed)}/{int(index)}/{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def pair_generators(seed: int, indices: Tensor | Sequence[int], stream: str) -> list[torch.Generator]:
    """One CPU generator per pair index, seeded by ``pair_seed(seed, index, stream)``."""
    return [torch.Generator().manual_seed(pair_seed(seed, int(i), stream)) for i in indices]


@dataclass
class PairExplanation:
    """Maps explaining a batch of B pairs (A, B) at input resolution H x W.

    ``sim_* = pos_* / max(pos_*)`` and ``dis_* = neg_* / max(neg_*)``, the maximum taken per pair over
    that one map (an all-zero map stays all zero): each of the four maps is ``(B, H, W)`` in ``[0, 1]``
    with its peak at 1, and its pixel ranking (what deletion/insertion use) is the method's own.
    ``raw_* = pos_* - neg_*`` keeps the signed, method-specific magnitudes; for methods with one signed
    map it is that map (``pos = relu(raw)``, ``neg = relu(-raw)``). The protocols rank pixels by ``raw``
    (``order_keys``), not by the clipped ``sim``/``dis``.

    Attributes:
        sim_a, dis_a, sim_b, dis_b: ``(B, H, W)`` float in ``[0, 1]``.
        raw_a, raw_b: ``(B, H, W)`` signed float in method units (correlation, score change, ...).
        score: ``(B,)`` cosine of the clean pair in ``[-1, 1]`` (xCos: the xCos score).
        method: registered name of the explainer.
        seconds: wall time of the whole call.
        threshold: decision threshold the explainer used, if any.
        extras: method-specific tensors (e.g. xCos grids ``S``, ``W``).
        signed: ``raw`` argues for a match where positive and against it where negative (every method but
            xCos ``map="W"``, whose ``raw`` is an attention map: where the model looks, for either decision).
    """

    sim_a: Tensor
    dis_a: Tensor
    sim_b: Tensor
    dis_b: Tensor
    raw_a: Tensor
    raw_b: Tensor
    score: Tensor
    method: str
    seconds: float
    threshold: float | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    signed: bool = True

    def order_keys(self, side: str = "a") -> tuple[Tensor, Tensor]:
        """(similarity key, dissimilarity key) ``(B, H, W)`` of image ``side`` (``"a"``/``"b"``): pixels are
        removed or restored in DESCENDING key order. Signed maps: ``(raw, -raw)``, i.e. the signed map
        descending for similarity and ascending for dissimilarity; unsigned ones: ``(raw, raw)``."""
        if side not in ("a", "b"):
            raise ValueError(f"side must be 'a' or 'b', got {side!r}")
        raw = self.raw_a if side == "a" else self.raw_b
        return (raw, -raw) if self.signed else (raw, raw)


class SideMaps(NamedTuple):
    """Unnormalised evidence for one image of each pair: ``pos``, ``neg`` ``(B, H, W)``, both >= 0, and the
    ranking map ``raw`` ``(B, H, W)`` when it is not ``pos - neg`` (an unsigned map such as xCos's W)."""

    pos: Tensor
    neg: Tensor
    raw: Tensor | None = None

    @classmethod
    def from_signed(cls, raw: Tensor) -> "SideMaps":
        """Split a signed map ``(B, H, W)`` into its positive and negative parts."""
        return cls(raw.clamp_min(0), (-raw).clamp_min(0))

    def zeros_like(self) -> "SideMaps":
        """All-zero maps of the same shape (a side that was not explained)."""
        return SideMaps(torch.zeros_like(self.pos), torch.zeros_like(self.neg),
                        None if self.raw is None else torch.zeros_like(self.raw))

    def normalised(self, eps: float = 1e-12) -> tuple[Tensor, Tensor, Tensor]:
        """(sim, dis, raw): ``pos`` and ``neg`` scaled to peak 1 per pair, and ``raw`` (default ``pos - neg``)."""

        def unit_peak(m: Tensor) -> Tensor:
            return m / m.amax(dim=(1, 2), keepdim=True).clamp_min(eps)

        return unit_peak(self.pos), unit_peak(self.neg), self.pos - self.neg if self.raw is None else self.raw


@contextmanager
def gradients_enabled() -> Iterator[None]:
    """Autograd on even under an outer ``torch.inference_mode()`` (Lightning validation).

    ``enable_grad`` alone does not leave inference mode; tensors passed in from it must still be
    cloned inside this block before they can take part in a graph.
    """
    with torch.inference_mode(False), torch.enable_grad():
        yield


class Explainer:
    """Base explainer. Subclasses implement ``_side`` (or ``_explain`` when the model is not an embedder).

    Args:
        embed_fn: callable (e.g. an ``nn.Module`` in eval mode) mapping images ``(B, 3, H, W)`` in
            ``[0, 1]`` to embeddings ``(B, D)``. Samples must not interact (BatchNorm in eval mode).
        threshold: decision threshold on the cosine; used by threshold-aware methods, reported by all.
        batch_size: images per forward pass when a method evaluates many perturbed copies; ``None``
            picks ``CPU_BATCH_SIZE`` (8) for CPU images, where small batches stay in cache and give the
            best per-image throughput, and ``GPU_BATCH_SIZE`` (64) elsewhere (raise it as memory allows).
        bf16: run forwards under bfloat16 autocast (~1e-2 score noise). Fast on GPUs and on CPUs with
            native bf16 (AVX512-BF16/AMX); emulated and several times slower on plain AVX2 CPUs.
        channels_last: feed images in channels-last memory format (pair it with
            ``model.to(memory_format=torch.channels_last)``).
        sides: ``"both"`` (default) explains A and B; ``"a"`` explains image A only and returns all-zero
            maps for B, half the cost, for protocols that perturb image A alone (``explain.py benchmark``).

    Use as a context manager (``with GradCAM(...) as cam:``) to release hooks and cached masks.
    """

    name = "base"
    signed = True  # see PairExplanation.signed
    CPU_BATCH_SIZE = 8
    GPU_BATCH_SIZE = 64

    def __init__(self, embed_fn: EmbedFn | None, threshold: float | None = None, *, batch_size: int | None = None,
                 bf16: bool = False, channels_last: bool = False, sides: str = "both") -> None:
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if sides not in ("both", "a"):
            raise ValueError(f"sides must be 'both' or 'a', got {sides!r}")
        self.sides = sides
        self.embed_fn = embed_fn
        self.threshold = threshold
        self.batch_size = batch_size
        self.bf16 = bf16
        self.channels_last = channels_last
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._cache: dict[Any, Any] = {}
        self._index: list[int] | None = None  # pair indices of the current call

    def __call__(self, img_a: Tensor, img_b: Tensor, index: Tensor | Sequence[int] | None = None) -> PairExplanation:
        """Explain pairs ``img_a[i]`` vs ``img_b[i]``: both ``(B, 3, H, W)`` float in ``[0, 1]``.

        ``index`` ``(B,)``: the pairs' data-set indices; seeded methods (``random``) then draw each pair's
        numbers from ``pair_seed(seed, index)``, so they do not depend on the calls made before.
        """
        _check_pair(img_a, img_b)
        if index is not None and len(index) != len(img_a):
            raise ValueError(f"index has {len(index)} entries for {len(img_a)} pairs")
        start = time.perf_counter()
        self._index = None if index is None else [int(i) for i in index]
        try:
            side_a, side_b, score, extras = self._explain(img_a, img_b)
        finally:
            self._index = None
        if score.is_cuda:
            torch.cuda.synchronize(score.device)  # kernels run asynchronously: time them, not their launch
        sim_a, dis_a, raw_a = side_a.normalised()
        sim_b, dis_b, raw_b = side_b.normalised()
        return PairExplanation(sim_a, dis_a, sim_b, dis_b, raw_a, raw_b, score, self.name,
                               time.perf_counter() - start, self.threshold, extras, self.signed)

    def _explain(self, img_a: Tensor, img_b: Tensor) -> tuple[SideMaps, SideMaps, Tensor, dict[str, Any]]:
        """Evidence maps of both images, clean scores ``(B,)`` and method extras."""
        with torch.no_grad():
            emb_a, emb_b = self.embed(img_a), self.embed(img_b)
        score = F.cosine_similarity(emb_a, emb_b, dim=1)
        side_a = self._pair_side(img_a, img_b, emb_b, score)
        if self.sides == "a":
            return side_a, side_a.zeros_like(), score, {}
        return side_a, self._pair_side(img_b, img_a, emb_a, score), score, {}

    def _explain_xcos(self, img_a: Tensor, img_b: Tensor, side: Callable[[Tensor, ArgumentsFn], SideMaps]
                      ) -> tuple[SideMaps, SideMaps, Tensor, dict[str, Any]]:
        """``_explain`` of a gradient method explaining the xCos score (``XCosScore``): ``side(x, arguments_fn)``
        gives the evidence of images ``x`` from the arguments of the score as a function of ``x``."""
        xcos = XCosScore(self.embed_fn)
        with torch.no_grad():
            grid_a, grid_b = xcos.grid(img_a), xcos.grid(img_b)
            score = xcos.score(grid_a, grid_b).float()
        side_a = side(img_a, lambda x: xcos.arguments(x, grid_b, "a"))
        if self.sides == "a":
            return side_a, side_a.zeros_like(), score, {}
        return side_a, side(img_b, lambda x: xcos.arguments(x, grid_a, "b")), score, {}

    def _pair_side(self, x: Tensor, partner_image: Tensor, partner: Tensor, score: Tensor) -> SideMaps:
        """Evidence for ``x`` given its partner's images ``(B, 3, H, W)`` and embeddings; most methods need
        only the embeddings (``_side``)."""
        return self._side(x, partner, score)

    def _side(self, x: Tensor, partner: Tensor, score: Tensor) -> SideMaps:
        """Evidence for images ``x`` ``(B, 3, H, W)`` against fixed partner embeddings ``(B, D)``.

        ``score`` ``(B,)`` is the clean pair cosine.
        """
        raise NotImplementedError

    def embed(self, x: Tensor, model: EmbedFn | None = None) -> Tensor:
        """Embeddings ``(B, D)`` of images ``(B, 3, H, W)`` by ``model`` (default ``embed_fn``), honouring
        ``bf16``/``channels_last``.

        At least float32 (bf16 outputs are upcast so scores are not rounded to 3 digits).
        """
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        autocast = torch.autocast(x.device.type, dtype=torch.bfloat16) if self.bf16 else nullcontext()
        with autocast:
            emb = (self.embed_fn if model is None else model)(x)
        return emb.to(torch.promote_types(emb.dtype, torch.float32))

    def batch_size_for(self, device: torch.device) -> int:
        """Images per forward pass on ``device``: ``batch_size``, or the device default when it is ``None``."""
        if self.batch_size is not None:
            return self.batch_size
        return self.CPU_BATCH_SIZE if device.type == "cpu" else self.GPU_BATCH_SIZE

    def _cached(self, key: Any, build: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def release(self) -> None:
        """Remove hooks and drop cached tensors (mask sets)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._cache.clear()

    def __enter__(self) -> "Explainer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


SCORES = ("cos", "xcos")
ArgumentsFn = Callable[[Tensor], Tensor]


class XCosScore:
    """The xCos score of an xCos model (``grid``, ``maps_from_grids``) as a sum of arguments, for the gradient
    methods' ``score="xcos"``: ``xcos(A, B) = sum_c W_c S_c = sum_{c,d} W_c e^A_{cd} e^B_{cd}`` with ``e`` the
    grid features L2-normalised per cell, so the arguments ``W_c e^A_{cd} e^B_{cd}`` (``(B, G * 49)``) sum to the
    score as the cosine's ``e^A_d e^B_d`` sum to the cosine."""

    def __init__(self, model: Any) -> None:
        if not (callable(getattr(model, "grid", None)) and callable(getattr(model, "maps_from_grids", None))
                and getattr(model, "has_xcos", False)):
            raise ModelSpecError(f"score='xcos' needs an xCos model (grid, maps_from_grids and attention); "
                                 f"{type(model).__name__} is not one")
        self.model = model

    def grid(self, x: Tensor) -> Tensor:
        return self.model.grid(x)

    def score(self, grid_a: Tensor, grid_b: Tensor) -> Tensor:
        return self.model.maps_from_grids(grid_a, grid_b)[2]

    def arguments(self, x: Tensor, partner_grid: Tensor, side: str) -> Tensor:
        """Arguments ``(B, G * 49)`` of ``xcos(x, partner)`` (``side="a"``) or ``xcos(partner, x)`` (``"b"``:
        attention need not be symmetric), with gradients to ``x`` only."""
        grid = self.grid(x)
        partner_grid = partner_grid.clone().detach()
        grid_a, grid_b = (grid, partner_grid) if side == "a" else (partner_grid, grid)
        attention = self.model.maps_from_grids(grid_a, grid_b)[1]
        return (attention[:, None] * F.normalize(grid_a, dim=1) * F.normalize(grid_b, dim=1)).flatten(1)


def _check_pair(img_a: Tensor, img_b: Tensor) -> None:
    for name, img in (("img_a", img_a), ("img_b", img_b)):
        if img.ndim != 4 or img.shape[1] != 3 or not img.is_floating_point():
            raise DataFormatError(f"{name} must be float RGB (B, 3, H, W) in [0, 1], got {tuple(img.shape)} "
                                  f"{img.dtype}; convert images with .float() / 255 and stack them")
    if img_a.shape != img_b.shape:
        raise DataFormatError(f"img_a {tuple(img_a.shape)} and img_b {tuple(img_b.shape)} must have the same "
                              "shape: resize both faces to the model's template (112x112)")
