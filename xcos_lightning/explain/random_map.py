"""Random baseline: uniform noise maps, the floor every method must beat."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from xcos_lightning.explain.base import EmbedFn, Explainer, SideMaps
from xcos_lightning.explain.registry import register_explainer


@register_explainer("random")
class RandomMap(Explainer):
    """Signed maps drawn uniformly in ``[-1, 1]`` from a generator seeded once at construction.

    Successive calls give different maps; the same seed replays the same sequence. ``embed_fn`` is only
    used for the reported clean score.

    Args:
        seed: generator seed.
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
        self.generator, self.cells = torch.Generator().manual_seed(seed), cells

    def _side(self, x: Tensor, partner: Tensor, score: Tensor) -> SideMaps:
        b, _, h, w = x.shape
        if self.cells == 0:
            noise = torch.rand(b, h, w, generator=self.generator) * 2 - 1
        else:
            grid = torch.rand(b, 1, self.cells, self.cells, generator=self.generator) * 2 - 1
            noise = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
        return SideMaps.from_signed(noise.to(x.device))
