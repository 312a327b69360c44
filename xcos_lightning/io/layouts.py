"""Weights-only pretrained layouts: a format name (``mobilefacenet``, ``arcface_torch-r18|r34|r50|r100``) and the
untrained model its files fill. ``pretrained`` loads such files; ``export`` records a layout by its name."""
from __future__ import annotations

from functools import partial
from typing import Callable

from xcos_lightning.errors import ModelSpecError
from xcos_lightning.models.iresnet import IRESNET_LAYERS, IResNet
from xcos_lightning.models.mobilefacenet import MobileFaceNet

PretrainedModel = IResNet | MobileFaceNet
_FORMATS: dict[str, Callable[[], PretrainedModel]] = {}


def register_pretrained_format(name: str, build: Callable[[], PretrainedModel]) -> None:
    """Make ``<name>:<path>`` loadable; ``build()`` returns the untrained model the file's weights fill, with
    the interface of ``IResNet``/``MobileFaceNet`` (``embedding_dim``, ``grid_channels``, ``grid_tap``,
    ``embed_from_grid`` and ``HEAD_MODULES``, the top-level modules after the grid tap point)."""
    if name in _FORMATS:
        raise ValueError(f"pretrained format {name!r} is already registered")
    _FORMATS[name] = build


def build_pretrained(fmt: str) -> PretrainedModel:
    """The untrained model of a weights-only format (``mobilefacenet``, ``arcface_torch-r50``, ...)."""
    if fmt not in _FORMATS:
        raise ModelSpecError(f"unknown weights-only pretrained format {fmt!r}; choose one of {sorted(_FORMATS)}")
    return _FORMATS[fmt]()


def list_weight_formats() -> list[str]:
    """Formats whose files hold weights only (the architecture comes from the format name)."""
    return sorted(_FORMATS)


register_pretrained_format("mobilefacenet", MobileFaceNet)
for _arch, _layers in IRESNET_LAYERS.items():
    register_pretrained_format(f"arcface_torch-{_arch}", partial(IResNet, _layers))
