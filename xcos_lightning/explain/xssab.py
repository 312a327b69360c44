"""xSSAB (seed 003): backpropagate the positive and negative arguments of the cosine to the input."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from xcos_lightning.explain.base import (SCORES, ArgumentsFn, EmbedFn, Explainer, SideMaps, XCosScore,
                                         gradients_enabled)
from xcos_lightning.explain.filters import gaussian_blur
from xcos_lightning.explain.registry import register_explainer


@register_explainer("xssab")
class XSSAB(Explainer):
    """Similarity Score Argument Backpropagation, threshold-aware.

    For image 1 against image 2: ``e1 = normalize(f(x1))``, ``e2 = normalize(f(x2)).detach()``,
    arguments ``a_i = e1_i * e2_i`` (they sum to the cosine). Dimensions with ``a_i >= th / n``
    (``th`` the decision threshold, ``n`` the embedding size) are positive arguments, the rest negative.
    ``pos`` = mean over RGB of ``|d sum_{positive} a_i / d x1|``, ``neg`` likewise for the negative set;
    the paper's combined map is ``raw = pos - neg``. Roles are swapped for image 2. Gradients are taken
    with respect to the ``[0, 1]`` pixels (models normalise inside, so this differs from the paper's
    normalised input only by the constant per-channel factor of the model's std).

    Args:
        threshold: decision threshold on the cosine (paper: EER threshold on clean LFW); ``None`` means 0,
            i.e. arguments split by sign.
        blur: apply the paper's 5x5, sigma 5 Gaussian blur to ``pos`` and ``neg`` (the released code has
            none; blurring is linear, so ``raw`` is the blurred combined map).
        score: ``"cos"`` (the paper) or ``"xcos"``: the xCos score of an xCos model, whose arguments are
            ``W_c e1_cd e2_cd`` over cells ``c`` and grid channels ``d`` (``XCosScore``; ``n = G * 49``); give
            the xCos threshold then.
        batch_size, bf16, channels_last: as ``Explainer``.
    """

    def __init__(self, embed_fn: EmbedFn, threshold: float | None = None, *, blur: bool = False, score: str = "cos",
                 **kwargs) -> None:
        super().__init__(embed_fn, threshold, **kwargs)
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        if score == "xcos":
            XCosScore(embed_fn)  # fails early, naming the model, if it has no xCos score
        self.blur, self.score = blur, score

    def _explain(self, img_a: Tensor, img_b: Tensor) -> tuple[SideMaps, SideMaps, Tensor, dict[str, Any]]:
        if self.score == "xcos":
            return self._explain_xcos(img_a, img_b, self._argument_side)
        return super()._explain(img_a, img_b)

    def _side(self, x: Tensor, partner: Tensor, score: Tensor) -> SideMaps:
        # The clone, made inside the gradient block, is a graph-capable copy of an outer inference_mode tensor.
        return self._argument_side(
            x, lambda images: F.normalize(self.embed(images), dim=1) * F.normalize(partner.clone(), dim=1))

    def _argument_side(self, x: Tensor, arguments_fn: ArgumentsFn) -> SideMaps:
        """``pos``/``neg`` of images ``x`` from the score's arguments ``arguments_fn(x)`` ``(B, n)``."""
        with gradients_enabled():
            # Clones turn tensors made under an outer inference_mode into graph-capable ones.
            x = x.clone().requires_grad_(True)
            arguments = arguments_fn(x)
            positive = arguments.detach() >= (self.threshold or 0.0) / arguments.shape[1]
            pos_score, neg_score = (arguments * positive).sum(), (arguments * ~positive).sum()
            (grad_pos,) = torch.autograd.grad(pos_score, x, retain_graph=True)
            (grad_neg,) = torch.autograd.grad(neg_score, x)
        pos, neg = grad_pos.abs().mean(1), grad_neg.abs().mean(1)
        if self.blur:
            pos, neg = gaussian_blur(pos), gaussian_blur(neg)
        return SideMaps(pos, neg)
