"""Model-parameter randomisation test (Adebayo et al.): maps must change when the weights are random."""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import Tensor, nn

from xcos_lightning.explain.base import Explainer, PairExplanation
from xcos_lightning.explain.stats import spearman


def randomised_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` with every module's ``reset_parameters()`` re-run under ``seed``.

    Covers conv, linear, norm (running statistics too) and PReLU layers; the original is untouched.
    """
    clone = copy.deepcopy(model)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for module in clone.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return clone


def parameter_randomisation_test(make_explainer: Callable[[nn.Module], Explainer], model: nn.Module,
                                 img_a: Tensor, img_b: Tensor, *, seed: int = 0) -> Tensor:
    """Spearman correlation ``(B,)`` in ``[-1, 1]`` per pair between trained and randomised-model maps.

    Args:
        make_explainer: builds an explainer for a given model, e.g.
            ``lambda m: GradCAM(m, target_layer=m.conv2)`` (called for ``model`` and its random copy).
        model: the trained embedding model; img_a, img_b: pairs ``(B, 3, H, W)`` in ``[0, 1]``.

    Compares the signed maps of both images (``raw_a``, ``raw_b`` concatenated). A meaningful method
    gives values near 0; values near 1 mean the maps do not depend on what the model learnt.
    """

    def signed_maps(m: nn.Module) -> Tensor:
        with make_explainer(m) as explainer:
            explanation: PairExplanation = explainer(img_a, img_b)
        return torch.cat([explanation.raw_a.flatten(1), explanation.raw_b.flatten(1)], dim=1)

    return spearman(signed_maps(model), signed_maps(randomised_copy(model, seed)))
