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
    """Signed map = ``S * W`` (each cell's contribution to ``xcos = sum S * W``), nearest-upsampled.

    ``map="S"`` explains with the cell cosines alone (signed: cells with ``S > 0`` argue for a match,
    ``S < 0`` against) and ``map="W"`` with the attention alone (both the similarity and the
    dissimilarity map are ``W``: attention says where the model looks, not which way the cell votes),
    so faithfulness protocols can score each factor of the product separately.

    Both faces get the same maps: the cells are aligned grid positions of the two faces. Nearest
    upsampling keeps each cell one constant block, since the model says nothing finer. ``score`` is the
    xCos score; ``extras`` holds ``S``, ``W`` ``(B, 7, 7)`` and their upsampled ``S_map``, ``W_map``
    ``(B, H, W)``. No gradients, no masks: one forward per pair.

    Args:
        model: object with ``xcos_maps(img_a, img_b)`` (e.g. the xCos model), in eval mode.
        threshold: reported with the explanation (the xCos paper centres S's colour map on it).
        map: ``"contribution"`` (``S * W``), ``"S"`` or ``"W"``: the grid behind the maps.
    """

    MAPS = ("contribution", "S", "W")

    def __init__(self, model: XCosMapsModel, threshold: float | None = None, *, map: str = "contribution",
                 **kwargs) -> None:
        super().__init__(None, threshold, **kwargs)
        if map not in self.MAPS:
            raise ValueError(f"map must be one of {self.MAPS}, got {map!r}")
        self.model, self.map = model, map

    def _explain(self, img_a: Tensor, img_b: Tensor) -> tuple[SideMaps, SideMaps, Tensor, dict[str, Any]]:
        with torch.no_grad():
            cos_grid, attention, xcos = self.model.xcos_maps(img_a, img_b)
        grids = torch.stack([cos_grid, attention, cos_grid * attention], dim=1).float()
        s_map, w_map, contribution = F.interpolate(grids, size=img_a.shape[-2:], mode="nearest").unbind(1)
        if self.map == "W":
            maps = SideMaps(w_map, w_map)
        else:
            maps = SideMaps.from_signed(s_map if self.map == "S" else contribution)
        return maps, maps, xcos.float(), {"S": cos_grid, "W": attention, "S_map": s_map, "W_map": w_map}
