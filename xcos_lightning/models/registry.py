"""Backbone registry: users pick a trunk by name, ``create_backbone`` adds the xCos grid head.

A *trunk* is an ``nn.Module`` mapping images ``(B, 3, H, W)`` to a feature map ``(B, C, 7, 7)`` at
``H = W = 112``; it exposes ``out_channels: int``. Trunk factories register with ``@register_trunk``; the
package's ``__init__`` imports the built-in trunk modules, so they are registered before any caller of this
module runs (importing it imports the package first).
"""
from __future__ import annotations

from typing import Callable

from torch import nn

_TRUNKS: dict[str, Callable[..., nn.Module]] = {}


def register_trunk(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a trunk factory under ``name`` (must be unique)."""

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _TRUNKS:
            raise ValueError(f"trunk {name!r} is already registered")
        _TRUNKS[name] = factory
        return factory

    return wrap


def list_trunks() -> list[str]:
    """Names accepted by ``create_trunk`` (plus ``timm/<model name>`` for any timm model)."""
    return sorted(_TRUNKS)


def create_trunk(name: str, **kwargs) -> nn.Module:
    """Build a registered trunk; ``timm/<model>`` builds any timm model through ``features_only``."""
    if name.startswith("timm/"):
        return _TRUNKS["timm"](model_name=name[len("timm/"):], **kwargs)
    if name not in _TRUNKS:
        raise KeyError(f"unknown backbone {name!r}; choose one of {sorted(_TRUNKS)} or 'timm/<model>'")
    return _TRUNKS[name](**kwargs)
