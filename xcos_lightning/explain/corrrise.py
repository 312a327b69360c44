"""CorrRISE (seed 000): per-pixel correlation between masked-pair scores and mask values."""
from __future__ import annotations

from torch import Tensor

from xcos_lightning.explain.base import EmbedFn
from xcos_lightning.explain.masks import MaskSet, Size
from xcos_lightning.explain.perturbation import MaskingExplainer
from xcos_lightning.explain.registry import register_explainer
from xcos_lightning.explain.stats import average_ranks, standardize


@register_explainer("corrrise")
class CorrRISE(MaskingExplainer):
    """Signed map = correlation, over N masks, of ``cos(f(A * M_k), f(B))`` with ``M_k[pixel]``.

    Positive correlation (keeping the pixel raises the score) is similarity, negative is dissimilarity;
    pixels the masks never vary get 0. Raw maps are correlations in ``[-1, 1]``.

    Args:
        n_masks: N, masked forwards per image (paper: 500).
        recipe: ``"paper"`` (10 patches with random values in [0, 1], clipped at the border) or
            ``"transcription"`` (3 black patches fully inside, from the authors' script).
        correlation: ``"pearson"`` (paper) or ``"spearman"`` (transcription ranks the scores; we rank
            the mask values too, which for black patches is the same).
        patch_size: side of the square patches in pixels (30 at 112x112).
        seed: seed of the mask set, which is drawn once per image size and reused for every pair.
        fill, fast, batch_size, bf16, channels_last: as ``MaskingExplainer`` / ``Explainer``.
    """

    def __init__(self, embed_fn: EmbedFn, threshold: float | None = None, *, n_masks: int = 500,
                 recipe: str = "paper", correlation: str = "pearson", patch_size: int = 30, seed: int = 0,
                 **kwargs) -> None:
        super().__init__(embed_fn, threshold, **kwargs)
        if recipe not in ("paper", "transcription"):
            raise ValueError(f"recipe must be 'paper' or 'transcription', got {recipe!r}")
        if correlation not in ("pearson", "spearman"):
            raise ValueError(f"correlation must be 'pearson' or 'spearman', got {correlation!r}")
        self.n_masks, self.recipe, self.correlation = n_masks, recipe, correlation
        self.patch_size, self.seed = patch_size, seed

    def _make_masks(self, size: Size) -> MaskSet:
        return MaskSet.generate(f"corrrise_{self.recipe}", self.n_masks, size, self.seed, patch_size=self.patch_size)

    def _standardized_masks(self, masks: Tensor) -> Tensor:
        """Mask values ``(N, H*W)``, ranked for Spearman, standardised per pixel; cached with the masks."""
        key = ("standardized", masks.shape, masks.device)

        def build() -> Tensor:
            flat = masks.flatten(1)
            return standardize(average_ranks(flat, dim=0) if self.correlation == "spearman" else flat, dim=0)

        return self._cached(key, build)

    def _saliency(self, scores: Tensor, masks: Tensor, clean: Tensor) -> Tensor:
        if self.correlation == "spearman":
            scores = average_ranks(scores, dim=1)
        # Pearson correlation of each pixel's N mask values with the N scores: one (B,N) x (N,HW) product.
        z_masks = self._standardized_masks(masks)
        corr = standardize(scores, dim=1).to(z_masks.dtype) @ z_masks
        return corr.view(-1, *masks.shape[1:])
