"""The frozen teacher whose pair cosine the xCos score regresses to."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Teacher(nn.Module):
    """Wraps an embedding model ``(B, 3, 112, 112) in [0, 1] -> (B, D)`` and keeps it frozen for life.

    ``train(True)`` is ignored: Lightning switches the whole LightningModule to train mode at every
    fit/validation transition, and a teacher in train mode drifts its BatchNorm statistics and turns
    dropout on (a bug of the public xCos template). Lightning also restores captured modes by writing
    ``.training`` directly, so every use re-asserts eval mode. Parameters never require gradients.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "Teacher":
        return super().train(False)

    @torch.no_grad()
    def pair_cosine(self, img_a: Tensor, img_b: Tensor) -> Tensor:
        """Teacher cosine ``(B,)`` in [-1, 1] of each pair."""
        self.eval()
        emb = self.model(torch.cat([img_a, img_b])).float()
        ea, eb = emb.chunk(2)
        return F.cosine_similarity(ea, eb, dim=1)
