"""``XCosModel``: the deployable xCos network (backbone + optional attention), free of training code."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xcos_lightning.models.backbone import GridBackbone, flip_grid, grid_embedding
from xcos_lightning.models.xcos import patched_cosine, xcos_score


class XCosModel(nn.Module):
    """Face model whose embedding is the flattened grid and whose pair score can be explained.

    Inputs everywhere: RGB ``(B, 3, 112, 112)`` in ``[0, 1]``.
    ``forward(x)`` -> L2-normalised embedding ``(B, G*49)`` (so it is a plain embedding model too);
    ``xcos_maps(a, b)`` -> ``(S, W, xcos)`` with S, W ``(B, 7, 7)`` and xcos ``(B,)``.
    ``attention=None`` gives an ArcFace-only model (no xCos score).
    """

    def __init__(self, backbone: GridBackbone, attention: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.attention = attention

    @property
    def has_xcos(self) -> bool:
        return self.attention is not None

    @property
    def embedding_dim(self) -> int:
        return self.backbone.embedding_dim

    @property
    def grid_layer(self) -> nn.Module:
        """The module whose output is the grid ``(B, G, 7, 7)`` (the xCos grid head): Grad-CAM's target layer."""
        return self.backbone.head

    def grid(self, x: Tensor, flip_tta: bool = False) -> Tensor:
        """Grid features ``(B, G, 7, 7)``; with ``flip_tta`` the mirrored face's grid (flipped back
        along the width) is added, the grid analogue of the insightface flip augmentation."""
        if not flip_tta:
            return self.backbone(x)
        both = self.backbone(torch.cat([x, torch.flip(x, dims=[-1])]))
        g, g_flip = both.chunk(2)
        return g + flip_grid(g_flip)

    def forward(self, x: Tensor) -> Tensor:
        return grid_embedding(self.grid(x))

    def maps_from_grids(self, grid_a: Tensor, grid_b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(S, W, xcos)`` from two grids ``(B, G, 7, 7)``."""
        if self.attention is None:
            raise RuntimeError("this model has no xCos attention (it was trained ArcFace-only)")
        s = patched_cosine(grid_a, grid_b)
        w = self.attention(grid_a, grid_b)
        return s, w, xcos_score(s, w)

    def xcos_maps(self, img_a: Tensor, img_b: Tensor, flip_tta: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """Cell cosines S ``(B, 7, 7)`` in [-1, 1], attention W ``(B, 7, 7)`` summing to 1, xCos ``(B,)``."""
        grids = self.grid(torch.cat([img_a, img_b]), flip_tta=flip_tta)
        return self.maps_from_grids(*grids.chunk(2))

    def pair_scores(self, img_a: Tensor, img_b: Tensor, flip_tta: bool = True) -> dict[str, Tensor]:
        """Verification scores ``(B,)``: ``cos`` of the flattened embeddings and, if present, ``xcos``."""
        ga, gb = self.grid(torch.cat([img_a, img_b]), flip_tta=flip_tta).chunk(2)
        out = {"cos": F.cosine_similarity(ga.flatten(1).float(), gb.flatten(1).float(), dim=1)}
        if self.has_xcos:
            out["xcos"] = self.maps_from_grids(ga, gb)[2]
        return out
