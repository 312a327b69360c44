"""RISE (Petsiuk et al.) adapted to verification: the cosine to the fixed partner replaces the class score."""
from __future__ import annotations

from torch import Tensor

from xcos_lightning.explain.base import EmbedFn
from xcos_lightning.explain.masks import MaskSet, Size
from xcos_lightning.explain.perturbation import MaskingExplainer, score_weighted_map
from xcos_lightning.explain.registry import register_explainer


@register_explainer("rise")
class RISE(MaskingExplainer):
    """Random ``cells x cells`` binary grids (keep probability ``p``), bilinearly upsampled and shifted.

    Signed map from the mean-centred scores, as S-RISE (``score_weighted_map``); raw maps in score units.

    Args:
        n_masks: N. cells: grid side (RISE: 7). p: probability that a cell is kept (RISE: 0.5).
        seed: seed of the mask set, drawn once per image size and reused.
        fill, fast, batch_size, bf16, channels_last: as ``MaskingExplainer`` / ``Explainer``.
    """

    def __init__(self, embed_fn: EmbedFn, threshold: float | None = None, *, n_masks: int = 500, cells: int = 7,
                 p: float = 0.5, seed: int = 0, **kwargs) -> None:
        super().__init__(embed_fn, threshold, **kwargs)
        self.n_masks, self.cells, self.p, self.seed = n_masks, cells, p, seed

    def _make_masks(self, size: Size) -> MaskSet:
        return MaskSet.generate("rise", self.n_masks, size, self.seed, cells=self.cells, p=self.p)

    def _saliency(self, scores: Tensor, masks: Tensor, clean: Tensor) -> Tensor:
        return score_weighted_map(scores, masks)
