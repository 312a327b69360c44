"""xSSAB (seed 003): backpropagate the positive and negative arguments of the cosine to the input."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from xcos_lightning.explain.base import EmbedFn, Explainer, SideMaps, gradients_enabled
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
        batch_size, bf16, channels_last: as ``Explainer``.
    """

    def __init__(self, embed_fn: EmbedFn, threshold: float | None = None, *, blur: bool = False, **kwargs) -> None:
        super().__init__(embed_fn, threshold, **kwargs)
        self.blur = blur

    def _side(self, x: Tensor, partner: Tensor, score: Tensor) -> SideMaps:
        with gradients_enabled():
            # Clones turn tensors made under an outer inference_mode into graph-capable ones.
            x = x.clone().requires_grad_(True)
            e2 = F.normalize(partner.clone(), dim=1)
            arguments = F.normalize(self.embed(x), dim=1) * e2
            positive = arguments.detach() >= (self.threshold or 0.0) / arguments.shape[1]
            pos_score, neg_score = (arguments * positive).sum(), (arguments * ~positive).sum()
            (grad_pos,) = torch.autograd.grad(pos_score, x, retain_graph=True)
            (grad_neg,) = torch.autograd.grad(neg_score, x)
        pos, neg = grad_pos.abs().mean(1), grad_neg.abs().mean(1)
        if self.blur:
            pos, neg = gaussian_blur(pos), gaussian_blur(neg)
        return SideMaps(pos, neg)
