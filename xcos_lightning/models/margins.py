"""Additive/multiplicative angular margin heads (ArcFace, CosFace and the combined form).

The combined form (insightface): target logit ``s * (cos(m1 * theta + m2) - m3)``, other logits
``s * cos(theta_j)``; ArcFace = (1, 0.5, 0), CosFace = (1, 0, 0.4).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# acos has an infinite derivative at +-1; keep theta strictly inside (0, pi).
_EPS = 1e-6


class MarginHead(nn.Module):
    """Class-centre matrix ``(num_classes, embedding_dim)`` + combined margin, computed in float32.

    Args:
        embedding_dim: D of the embeddings fed to ``forward``.
        num_classes: number of training identities.
        s: logit scale. m1, m2, m3: multiplicative angle, additive angle, additive cosine margins.
    """

    def __init__(self, embedding_dim: int, num_classes: int, s: float = 64.0, m1: float = 1.0,
                 m2: float = 0.5, m3: float = 0.0) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.normal_(self.weight, std=0.01)
        self.s, self.m1, self.m2, self.m3 = s, m1, m2, m3
        self.num_classes = num_classes

    def cosine(self, embeddings: Tensor) -> Tensor:
        """Cosine to every class centre, ``(B, num_classes)`` in [-1, 1], float32."""
        return F.linear(F.normalize(embeddings.float(), dim=1), F.normalize(self.weight.float(), dim=1))

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Margin logits ``(B, num_classes)`` for embeddings ``(B, D)`` and labels ``(B,)`` in [0, C) (not checked
        here, which would cost host syncs per step: ``XCosModule`` checks the data's labels once at set-up)."""
        # Autocast would run the matmul in half precision; margins need float32 near cos = +-1.
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            cos = self.cosine(embeddings)
            target_cos = cos.gather(1, labels[:, None]).squeeze(1)
            target = margin_target(target_cos, self.m1, self.m2, self.m3)
            logits = cos.scatter(1, labels[:, None], target[:, None])
            return logits * self.s

    def loss(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Mean margin cross-entropy of the batch and the fraction of it whose target logit is the largest,
        float32 scalars; arguments as ``forward``."""
        logits = self(embeddings, labels)
        return F.cross_entropy(logits, labels), (logits.argmax(1) == labels).float().mean()


def margin_target(cos: Tensor, m1: float, m2: float, m3: float) -> Tensor:
    """``cos(m1*theta + m2) - m3`` for ``cos`` in [-1, 1], non-decreasing in ``cos``, finite gradients everywhere.

    Past ``theta* = (pi - m2) / m1`` the cosine would start increasing again (rewarding a worse angle), so the
    target falls back to a line of slope 1 in ``cos`` that starts at or below the branch's minimum ``-1 - m3``:
    ``cos - m3 - max(m2 * sin(m2), cos(theta*) + 1)``. For ``m1 = 1`` that is insightface's ``cos - m2 sin m2 -
    m3`` (``m2 sin m2 >= 1 - cos m2`` there); for ``m1 > 1`` (SphereFace-style, e.g. m1 = 4: theta* = pi / 4)
    the second term makes it meet the branch at ``cos(theta*)`` instead of jumping above it.
    """
    if m1 == 1.0 and m2 == 0.0:
        return cos - m3
    theta = torch.acos(cos.clamp(-1 + _EPS, 1 - _EPS))
    angle = m1 * theta + m2
    theta_star = (math.pi - m2) / m1
    if theta_star >= math.pi:  # m1 * theta + m2 never passes pi on [0, pi]
        return torch.cos(angle) - m3
    fallback = cos - m3 - max(m2 * math.sin(m2), math.cos(theta_star) + 1)
    return torch.where(angle <= math.pi, torch.cos(angle) - m3, fallback)


class ArcFace(MarginHead):
    """Additive angular margin: ``s * cos(theta + m)`` (defaults s=64, m=0.5)."""

    def __init__(self, embedding_dim: int, num_classes: int, s: float = 64.0, m: float = 0.5) -> None:
        super().__init__(embedding_dim, num_classes, s=s, m1=1.0, m2=m, m3=0.0)


class CosFace(MarginHead):
    """Additive cosine margin: ``s * (cos(theta) - m)`` (defaults s=64, m=0.4)."""

    def __init__(self, embedding_dim: int, num_classes: int, s: float = 64.0, m: float = 0.4) -> None:
        super().__init__(embedding_dim, num_classes, s=s, m1=1.0, m2=0.0, m3=m)
