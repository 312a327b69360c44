"""Black-box base: score masked copies of one image against the clean partner, then relate scores to masks.

Only one image of a pair is masked at a time (seeds 000/001): masking both lets two unrelated but
equally masked faces look alike.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xcos_lightning.explain.base import EmbedFn, Explainer, SideMaps
from xcos_lightning.explain.inference import weights_key
from xcos_lightning.models.fusion import inference_copy
from xcos_lightning.explain.masks import MaskSet, Size


class MaskingExplainer(Explainer):
    """Explainer driven by a mask set; subclasses give ``_make_masks`` and ``_saliency``.

    The masked forwards run under ``torch.inference_mode``, ``batch_size`` images at a time (default:
    8 on CPU), and by default on a private inference copy of the model (``fast``); the clean pair is
    embedded once, by ``embed_fn`` itself.

    Args:
        fill: value of hidden pixels (``image * M + fill * (1 - M)``); 0 = black as in the papers.
            ``"partner"``: hidden pixels take the other face's pixels at the same place (counterfactual
            fill for aligned faces: a region is dissimilar when showing the partner's content there
            raises the score; black cannot reveal a dark occluder such as sunglasses).
        fast: when ``embed_fn`` is an ``nn.Module`` in eval mode, run the masked forwards on
            ``inference_copy(embed_fn)``: BatchNorm folded into the convolutions and, for CPU models,
            channels-last weights and images. Same maps up to float rounding (scores differ by ~1e-6);
            MobileFaceNet on one CPU thread: 1.2x faster per image (``benchmarks/bench_corrrise.py``).
            The copy (~0.1 s to build) is rebuilt when the model's weights change
            (e.g. between epochs), so an explainer can be kept across training. ``False``: use
            ``embed_fn`` as given.
        Other arguments as ``Explainer``.
    """

    def __init__(self, embed_fn: EmbedFn, threshold: float | None = None, *, fill: float | str = 0.0,
                 fast: bool = True, **kwargs) -> None:
        super().__init__(embed_fn, threshold, **kwargs)
        if isinstance(fill, str) and fill != "partner":
            raise ValueError(f"fill must be a number or 'partner', got {fill!r}")
        self.fill = fill
        self.fast = fast

    def _make_masks(self, size: Size) -> MaskSet:
        raise NotImplementedError

    def _saliency(self, scores: Tensor, masks: Tensor, clean: Tensor) -> Tensor:
        """Signed map ``(B, H, W)`` from masked scores ``(B, N)``, masks ``(N, H, W)``, clean scores ``(B,)``."""
        raise NotImplementedError

    def mask_set(self, size: Size, device: torch.device) -> MaskSet:
        """The explainer's masks for images of ``size``: generated on first use, then reused."""
        return self._cached(("masks", tuple(size), device), lambda: self._make_masks(tuple(size)).to(device))

    def masked_model(self) -> tuple[EmbedFn, bool]:
        """(model for the masked forwards, whether to feed it channels-last images); see ``fast``."""
        model = self.embed_fn
        if not (self.fast and isinstance(model, nn.Module) and not model.training):
            return model, False
        key = weights_key(model)
        cached = self._cache.get("inference_copy")
        if cached is None or cached[0] != key:
            first = next((t for t in (*model.parameters(), *model.buffers())), None)
            channels_last = first is not None and first.device.type == "cpu"
            cached = self._cache["inference_copy"] = (key, inference_copy(model, channels_last), channels_last)
        return cached[1], cached[2]

    def _pair_side(self, x: Tensor, partner_image: Tensor, partner: Tensor, score: Tensor) -> SideMaps:
        return self._side(x, partner, score, canvas=partner_image if self.fill == "partner" else None)

    def _side(self, x: Tensor, partner: Tensor, score: Tensor, canvas: Tensor | None = None) -> SideMaps:
        """As ``Explainer._side``; ``canvas`` ``(B, 3, H, W)`` (the partner images) replaces ``fill``."""
        masks = self.mask_set(x.shape[-2:], x.device).masks
        with torch.inference_mode():
            scores = self.masked_scores(x, partner, masks, canvas)
        # A normal tensor again (unless the caller runs in inference mode): maps may be edited in place.
        scores = scores.clone()
        with torch.no_grad():
            return SideMaps.from_signed(self._saliency(scores, masks, score))

    def masked_scores(self, x: Tensor, partner: Tensor, masks: Tensor, canvas: Tensor | None = None) -> Tensor:
        """Cosines ``(B, N)`` of every masked image ``x[b] * masks[k]`` (hidden part: ``fill``, or
        ``canvas[b]`` when given) with ``partner[b]``.

        The B*N masked images are built and embedded ``batch_size`` at a time, never all at once.
        """
        model, channels_last = self.masked_model()
        b_count, n = x.shape[0], masks.shape[0]
        batch = self.batch_size_for(x.device)
        scores = []
        for start in range(0, b_count * n, batch):
            flat = torch.arange(start, min(start + batch, b_count * n), device=x.device)
            b, k = flat // n, flat % n
            m = masks[k, None]
            images = x[b] * m
            if canvas is not None:
                images += canvas[b] * (1 - m)
            elif self.fill:
                images += self.fill * (1 - m)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            scores.append(F.cosine_similarity(self.embed(images, model), partner[b], dim=1))
        return torch.cat(scores).view(b_count, n)


def score_weighted_map(scores: Tensor, masks: Tensor, eps: float = 1e-6) -> Tensor:
    """RISE-style map ``(B, H, W)``: per pixel, the mask-weighted mean of the centred scores.

    ``map[p] = sum_k (s_k - mean(s)) M_k[p] / sum_k M_k[p]``: how much keeping pixel p raises (> 0,
    similar) or lowers (< 0, dissimilar) the score compared with an average masked copy. Centring
    removes the part of ``sum_k s_k M_k`` that only follows how often a pixel is kept; dividing by
    ``sum_k M_k`` (RISE divides by its expectation ``N p``) evens out uneven coverage. Pixels never
    kept get 0.
    """
    flat = masks.flatten(1)
    centred = (scores - scores.mean(dim=1, keepdim=True)).to(flat.dtype)
    weighted = centred @ flat / flat.sum(0).clamp_min(eps)
    return weighted.view(-1, *masks.shape[1:])
