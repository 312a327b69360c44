"""Random baseline: uniform noise maps, the floor every method must beat."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from xcos_lightning.explain.base import EmbedFn, Explainer, SideMaps, pair_generators
from xcos_lightning.explain.registry import register_explainer


@register_explainer("random")
class RandomMap(Explainer):
    """Signed maps drawn uniformly in ``[-1, 1]``, seeded per pair.

    Called with the pairs' ``index`` (as every protocol of ``xcos_lightning.metrics.protocols`` does), image
    A of pair ``i`` gets the map of generator ``pair_seed(seed, i, "random/a")`` and image B that of
    ``"random/b"``: a pair's map does not depend on the batch, on the other methods run, or on how often the
    pair was explained before (a clean pair and its patched version get the same map). Without ``index``
    one generator seeded at construction is drawn in sequence (successive calls differ; the same seed
    replays the same sequence). ``embed_fn`` is only used for the reported clean score.

    Args:
        seed: run seed.
        cells: 0 draws every pixel independently (xSSAB's RND); ``c > 0`` draws a ``c x c`` grid and
            upsamples it bilinearly, a map without information that is as smooth as a ``c x c``
            explanation (Grad-CAM: 7; CorrRISE's 30 px patches at 112 px: about 4). Protocols that
            reward scattered or contiguous perturbations are then compared at equal smoothness.
    """

    def __init__(self, embed_fn: EmbedFn, threshold: float | None = None, *, seed: int = 0, cells: int = 0,
                 **kwargs) -> None:
        super().__init__(embed_fn, threshold, **kwargs)
        if cells < 0:
            raise ValueError(f"cells must be >= 0, got {cells}")
        self.seed, self.cells = seed, cells
        self.generator = torch.Generator().manual_seed(seed)

    def _explain(self, img_a: Tensor, img_b: Tensor) -> tuple[SideMaps, SideMaps, Tensor, dict[str, Any]]:
        with torch.no_grad():
            score = F.cosine_similarity(self.embed(img_a), self.embed(img_b), dim=1)
        side_a = self._noise(img_a, "a")
        return side_a, side_a.zeros_like() if self.sides == "a" else self._noise(img_b, "b"), score, {}

    def _noise(self, x: Tensor, side: str) -> SideMaps:
        b, _, h, w = x.shape
        shape = (1, h, w) if self.cells == 0 else (1, 1, self.cells, self.cells)
        generators = ([self.generator] * b if self._index is None
                      else pair_generators(self.seed, self._index, f"random/{side}"))
        noise = torch.cat([torch.rand(shape, generator=g) for g in generators]) * 2 - 1
        if self.cells:
            noise = F.interpolate(noise, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
        return SideMaps.from_signed(noise.to(x.device))
