"""Random baseline: uniform noise maps, the floor every method must beat."""
from __future__ import annotations

import torch
from torch import Tensor

from xcos_lightning.explain.base import EmbedFn, Explainer, SideMaps
from xcos_lightning.explain.registry import register_explainer


@register_explainer("random")
class RandomMap(Explainer):
    """Signed maps drawn uniformly in ``[-1, 1]`` per pixel from a generator seeded once at construction.

    Successive calls give different maps; the same seed replays the same sequence. ``embed_fn`` is only
    used for the reported clean score.
    """

    def __init__(self, embed_fn: EmbedFn, threshold: float | None = None, *, seed: int = 0, **kwargs) -> None:
        super().__init__(embed_fn, threshold, **kwargs)
        self.generator = torch.Generator().manual_seed(seed)

    def _side(self, x: Tensor, partner: Tensor, score: Tensor) -> SideMaps:
        b, _, h, w = x.shape
        noise = torch.rand(b, h, w, generator=self.generator) * 2 - 1
        return SideMaps.from_signed(noise.to(x.device))
