"""Sliding-patch occlusion in the style of xFace: how much hiding each region changes the pair score."""
from __future__ import annotations

from typing import Sequence

from torch import Tensor

from xcos_lightning.explain.base import EmbedFn
from xcos_lightning.explain.masks import MaskSet, Size, occlusion_masks
from xcos_lightning.explain.perturbation import MaskingExplainer
from xcos_lightning.explain.registry import register_explainer


@register_explainer("occlusion")
class Occlusion(MaskingExplainer):
    """Signed map = mean score drop ``cos(clean) - cos(occluded)`` over all patches covering a pixel.

    A drop (hiding the region lowers similarity) marks similarity; a rise marks dissimilarity. Raw maps
    are in score units. Cost: one forward per patch position and size (1249 per image at 112x112 with
    the defaults).

    Args:
        patch_sizes: side lengths of the occluding squares (xFace: 7, 14, 28).
        stride: step between patch positions (xFace: 5); at most the largest patch size, else pixels between
            the patches are never hidden and their score change is 0/0 (rejected with a ``ValueError``).
        fill: value of occluded pixels (0 = black).
        fast, batch_size, bf16, channels_last: as ``MaskingExplainer`` / ``Explainer``.
    """

    def __init__(self, embed_fn: EmbedFn, threshold: float | None = None, *,
                 patch_sizes: Sequence[int] = (7, 14, 28), stride: int = 5, **kwargs) -> None:
        super().__init__(embed_fn, threshold, **kwargs)
        self.patch_sizes, self.stride = tuple(patch_sizes), stride
        if not self.patch_sizes or min(self.patch_sizes) < 1 or stride < 1:
            raise ValueError(f"occlusion needs patch sizes >= 1 and stride >= 1, got {self.patch_sizes}, {stride}")
        if stride > max(self.patch_sizes):
            largest = max(self.patch_sizes)
            raise ValueError(f"occlusion stride {stride} is larger than the largest patch ({largest} px): the pixels "
                             f"between patches would never be hidden; use stride <= {largest}")

    def _make_masks(self, size: Size) -> MaskSet:
        return MaskSet("occlusion", None, occlusion_masks(size, self.patch_sizes, self.stride))

    def _saliency(self, scores: Tensor, masks: Tensor, clean: Tensor) -> Tensor:
        hidden = 1 - masks.flatten(1)
        drop = (clean[:, None] - scores).to(hidden.dtype)
        return (drop @ hidden / hidden.sum(0)).view(-1, *masks.shape[1:])
