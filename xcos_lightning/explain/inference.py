"""Embedding functions for the perturbation explainers' thousands of no-grad forwards, built on the models'
BatchNorm-folded inference copies (:mod:`xcos_lightning.models.fusion`)."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Callable

import torch
from torch import Tensor, nn

from xcos_lightning.models.fusion import fast_model


def fast_embedding(model: nn.Module, bf16: bool = False) -> Callable[[Tensor], Tensor]:
    """Embedding function for many no-grad forwards of perturbed images: a ``fast_model`` of ``model``
    (channels-last on CPU) built for its current weights; images ``(B, 3, H, W)`` -> float32 ``(B, D)``.

    The copy does not follow later weight updates: build a new one after each training step.
    """
    fast = fast_model(model, channels_last=next(model.parameters()).device.type == "cpu")

    def embed(x: Tensor) -> Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16) if bf16 else nullcontext():
            return fast(x).float()

    return embed


def weights_key(model: nn.Module) -> tuple[tuple[int, int], ...]:
    """Changes whenever a parameter or buffer of ``model`` is replaced or modified in place (optimizer
    steps, ``load_state_dict``, ``.to()``): storage address and version counter of each tensor."""
    return tuple((t.data_ptr(), t._version) for t in (*model.parameters(), *model.buffers()))
