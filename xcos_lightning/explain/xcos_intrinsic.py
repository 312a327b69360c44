"""The xCos model's own explanation: cell cosines S, attention W and their product, on the faces."""
from __future__ import annotations

from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from xcos_lightning.explain.base import Explainer, SideMaps
from xcos_lightning.explain.registry import register_explainer


class XCosMapsModel(Protocol):
    """Any object exposing the xCos grids of a batch of pairs."""

    def xcos_maps(self, img_a: Tensor, img_b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """S ``(B, 7, 7)`` cell cosines in ``[-1, 1]``, W ``(B, 7, 7)`` summing to 1, xCos ``(B,)``."""
        ...


@register_explainer("xcos")
class XCosIntrinsic(Explainer):
    """Signed map = ``W * (S - t)`` (each cell's share of the decision margin ``xcos - t = sum W * (S - t)``,
    since W sums to 1; ``t`` = ``threshold``, 0 when ``None``), nearest-upsampled.

    Centring on the threshold puts the split between similarity and dissimilarity where the decision is
    made: cells with ``S > t`` argue for a match, the rest against it (split at 0, a model whose cells all
    have ``S > 0`` would have no dissimilarity evidence at all). ``map="S"`` explains with ``S - t`` alone
    and ``map="W"`` with the attention alone (unsigned: both the similarity and the dissimilarity map are
    ``W``, and both orders rank it descending: attention says where the model looks, not which way the
    cell votes), so faithfulness protocols can score each factor of the product separately.

    Both faces get the same maps: the cells are aligned grid positions of the two faces. Nearest
    upsampling keeps each cell one constant block, since the model says nothing finer. ``score`` is the
    xCos score; ``extras`` holds ``S``, ``W`` ``(B, 7, 7)`` and their upsampled ``S_map``, ``W_map``
    ``(B, H, W)``. No gradients, no masks: one forward per pair.

    Args:
        model: object with ``xcos_maps(img_a, img_b)`` (e.g. the xCos model), in eval mode.
        threshold: the xCos decision threshold ``t`` the maps are centred on (the xCos paper centres S's colour
            map on it); give the threshold of the xCos score, not of the embedding cosine.
        map: ``"contribution"`` (``W * (S - t)``), ``"S"`` (``S - t``) or ``"W"``: the grid behind the maps.
    """

    MAPS = ("contribution", "S", "W")

    def __init__(self, model: XCosMapsModel, threshold: float | None = None, *, map: str = "contribution",
                 **kwargs) -> None:
        super().__init__(None, threshold, **kwargs)
        if map not in self.MAPS:
            raise ValueError(f"map must be one of {self.MAPS}, got {map!r}")
        self.model, self.map = model, map
        self.signed = map != "W"

    def _explain(self, img_a: Tensor, img_b: Tensor) -> tuple[SideMaps, SideMaps, Tensor, dict[str, Any]]:
        with torch.no_grad():
            cos_grid, attention, xcos = self.model.xcos_maps(img_a, img_b)
        margin = cos_grid - (self.threshold or 0.0)
        grids = torch.stack([cos_grid, attention, margin, margin * attention], dim=1).float()
        s_map, w_map, s_margin, contribution = F.interpolate(grids, size=img_a.shape[-2:], mode="nearest").unbind(1)
        if self.map == "W":
            maps = SideMaps(w_map, w_map, w_map)
        else:
            maps = SideMaps.from_signed(s_margin if self.map == "S" else contribution)
        return maps, maps, xcos.float(), {"S": cos_grid, "W": attention, "S_map": s_map, "W_map": w_map}
