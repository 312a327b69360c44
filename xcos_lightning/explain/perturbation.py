"""Black-box base: score masked copies of one image against the clean partner, then relate scores to masks.

Only one image of a pair is masked at a time (seeds 000/001): masking both lets two unrelated but
equally masked faces look alike.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from xcos_lightning.explain.base import EmbedFn, Explainer, SideMaps
from xcos_lightning.explain.masks import MaskSet, Size


class MaskingExplainer(Explainer):
    """Explainer driven by a mask set; subclasses give ``_make_masks`` and ``_saliency``.

    Args:
        fill: value of hidden pixels (``image * M + fill * (1 - M)``); 0 = black as in the papers.
        Other arguments as ``Explainer``.
    """

    def __init__(self, embed_fn: EmbedFn, threshold: float | None = None, *, fill: float = 0.0, **kwargs) -> None:
        super().__init__(embed_fn, threshold, **kwargs)
        self.fill = fill

    def _make_masks(self, size: Size) -> MaskSet:
        raise NotImplementedError

    def _saliency(self, scores: Tensor, masks: Tensor, clean: Tensor) -> Tensor:
        """Signed map ``(B, H, W)`` from masked scores ``(B, N)``, masks ``(N, H, W)``, clean scores ``(B,)``."""
        raise NotImplementedError

    def mask_set(self, size: Size, device: torch.device) -> MaskSet:
        """The explainer's masks for images of ``size``: generated on first use, then reused."""
        return self._cached(("masks", tuple(size), device), lambda: self._make_masks(tuple(size)).to(device))

    def _side(self, x: Tensor, partner: Tensor, score: Tensor) -> SideMaps:
        masks = self.mask_set(x.shape[-2:], x.device).masks
        with torch.no_grad():
            scores = self.masked_scores(x, partner, masks)
            return SideMaps.from_signed(self._saliency(scores, masks, score))

    def masked_scores(self, x: Tensor, partner: Tensor, masks: Tensor) -> Tensor:
        """Cosines ``(B, N)`` of every masked image ``x[b] * masks[k]`` with ``partner[b]``.

        The B*N masked images are built and embedded ``batch_size`` at a time, never all at once.
        """
        b_count, n = x.shape[0], masks.shape[0]
        scores = []
        for start in range(0, b_count * n, self.batch_size):
            flat = torch.arange(start, min(start + self.batch_size, b_count * n), device=x.device)
            b, k = flat // n, flat % n
            m = masks[k, None]
            images = x[b] * m + self.fill * (1 - m)
            scores.append(F.cosine_similarity(self.embed(images), partner[b], dim=1))
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
