"""S-RISE (seed 001): masks of Gaussian blobs, saliency = score-weighted sum of the masks."""
from __future__ import annotations

from torch import Tensor

from xcos_lightning.explain.base import EmbedFn
from xcos_lightning.explain.masks import MaskSet, Size
from xcos_lightning.explain.perturbation import MaskingExplainer, score_weighted_map
from xcos_lightning.explain.registry import register_explainer


@register_explainer("srise")
class SRISE(MaskingExplainer):
    """S-RISE on pairs: image A under blob masks against the clean B, then B against the clean A.

    The paper's saliency ``sum_k s_k M_k`` has no sign. We centre the scores at their mean over the N
    masks (``score_weighted_map``): positive where keeping a pixel raises ``cos`` above the average
    masked copy (similarity), negative where it lowers it (dissimilarity). Raw maps are in score units.

    Args:
        n_masks: N (paper: 500). blobs, kernel, sigma: blobs per mask and their Gaussian (paper 100, 40, 7).
        seed: seed of the mask set, drawn once per image size and reused.
        fill, fast, batch_size, bf16, channels_last: as ``MaskingExplainer`` / ``Explainer``.
    """

    def __init__(self, embed_fn: EmbedFn, threshold: float | None = None, *, n_masks: int = 500, blobs: int = 100,
                 kernel: int = 40, sigma: float = 7.0, seed: int = 0, **kwargs) -> None:
        super().__init__(embed_fn, threshold, **kwargs)
        self.n_masks, self.blobs, self.kernel, self.sigma, self.seed = n_masks, blobs, kernel, sigma, seed

    def _make_masks(self, size: Size) -> MaskSet:
        return MaskSet.generate("srise", self.n_masks, size, self.seed, blobs=self.blobs, kernel=self.kernel,
                                sigma=self.sigma)

    def _saliency(self, scores: Tensor, masks: Tensor, clean: Tensor) -> Tensor:
        return score_weighted_map(scores, masks)
