"""Model-parameter randomisation test (Adebayo et al.): maps must change when the weights are random."""
from __future__ import annotations

import copy
import math
from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from xcos_lightning.explain.base import Explainer, PairExplanation
from xcos_lightning.explain.stats import spearman

CALIBRATION_BATCH = 64  # images per BatchNorm calibration forward


def randomised_copy(model: nn.Module, seed: int = 0, calibration: Tensor | None = None) -> nn.Module:
    """An eval-mode deep copy of ``model`` with random weights that still computes useful embeddings.

    Every module's ``reset_parameters()`` is re-run under ``seed`` (conv, linear, norm, PReLU). A reset
    BatchNorm normalises with mean 0 and variance 1, which matches none of the random activations: in a
    deep network they shrink layer after layer until every input gets the same embedding, and every
    explanation of that model is trivially flat. So the running statistics are then re-estimated on
    ``calibration`` images: one pass with only the BatchNorm layers in training mode and cumulative
    averaging (``momentum=None``), as ``torch.optim.swa_utils.update_bn`` does. The original is untouched.

    Args:
        model: the trained embedding model.
        seed: seed of the new weights.
        calibration: images ``(N, 3, H, W)`` in ``[0, 1]``, ``N >= 2`` (e.g. the pairs being explained);
            required when ``model`` has BatchNorm layers.
    """
    clone = copy.deepcopy(model)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for module in clone.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    norms = [m for m in clone.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if norms:
        if calibration is None or calibration.ndim != 4 or calibration.shape[0] < 2:
            got = "nothing" if calibration is None else f"shape {tuple(calibration.shape)}"
            raise ValueError(f"{type(model).__name__} has BatchNorm layers: pass calibration images (N >= 2, "
                             f"3, H, W) to re-estimate their statistics for the random weights; got {got}")
        recalibrate_batchnorm(clone, norms, calibration)
    return clone.eval()


def recalibrate_batchnorm(model: nn.Module, norms: list[_BatchNorm], images: Tensor) -> None:
    """In place: running statistics of ``norms`` (BatchNorm layers of ``model``) estimated on ``images``.

    Batches of near-equal size (never a lone image, which BatchNorm cannot normalise); other layers
    (dropout, ...) stay in eval mode.
    """
    model.eval()
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batches
        bn.train()
    with torch.no_grad():
        for batch in images.tensor_split(math.ceil(images.shape[0] / CALIBRATION_BATCH)):
            model(batch)
    for bn, momentum in zip(norms, momenta):
        bn.momentum = momentum
        bn.eval()


def parameter_randomisation_test(make_explainer: Callable[[nn.Module], Explainer], model: nn.Module,
                                 img_a: Tensor, img_b: Tensor, *, seed: int = 0,
                                 random_model: nn.Module | None = None) -> Tensor:
    """Spearman correlation ``(B,)`` in ``[-1, 1]`` per pair between trained and randomised-model maps.

    Args:
        make_explainer: builds an explainer for a given model, e.g.
            ``lambda m: GradCAM(m, target_layer=m.conv2)`` (called for ``model`` and its random copy).
        model: the trained embedding model; img_a, img_b: pairs ``(B, 3, H, W)`` in ``[0, 1]``.

    The random copy is ``random_model`` if given (build it once with ``randomised_copy`` to test many
    batches against one random model), else ``randomised_copy(model, seed, calibration=cat([img_a, img_b]))``.
    Compares the signed maps of both images (``raw_a``, ``raw_b`` concatenated). A meaningful method
    gives values near 0; values near 1 mean the maps do not depend on what the model learnt.
    """

    def signed_maps(m: nn.Module) -> Tensor:
        with make_explainer(m) as explainer:
            explanation: PairExplanation = explainer(img_a, img_b)
        return torch.cat([explanation.raw_a.flatten(1), explanation.raw_b.flatten(1)], dim=1)

    if random_model is None:
        random_model = randomised_copy(model, seed, calibration=torch.cat([img_a, img_b]))
    return spearman(signed_maps(model), signed_maps(random_model))
