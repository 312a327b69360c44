"""Pretrained face-recognition models from users' files, chosen by a SPEC ``<format>:<path>``.

Formats: ``mobilefacenet`` (the layout of the shared ``mobilefacenet_128d.pt``),
``arcface_torch-r18|r34|r50|r100`` (insightface ``backbone.pth``; the layouts: ``xcos_lightning.io.layouts``)
and ``safetensors`` (a file written by ``explain.py export --format safetensors``: weights plus the
architecture as JSON metadata, rebuilt only from this package's classes; see ``xcos_lightning.io.export``).
Files are read with ``torch.load(weights_only=True)`` or safetensors, so a crafted file cannot run code, and
must match the layout exactly (strict loading). Example::

    model = load_pretrained("arcface_torch-r50:/models/ms1mv3_r50/backbone.pth")
    emb = model(images)                      # (B, 3, 112, 112) RGB [0, 1] -> (B, 512)
    grid = model.grid_tap(images)            # (B, 512, 7, 7), the xCos / Grad-CAM tap point
    trunk = create_trunk("iresnet50", pretrained="/models/ms1mv3_r50/backbone.pth")
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from torch import nn

from xcos_lightning.errors import ModelSpecError
from xcos_lightning.io.export import load_safetensors
from xcos_lightning.io.layouts import build_pretrained, list_weight_formats
from xcos_lightning.weights_file import load_weights_file

# Formats whose files carry their own architecture: ``load(path) -> eval-mode model``.
_LOADERS: dict[str, Callable[[Path], nn.Module]] = {}


def register_pretrained_loader(name: str, load: Callable[[Path], nn.Module]) -> None:
    """Make ``<name>:<path>`` loadable by ``load(path)``, for files that describe their own architecture;
    ``load`` returns an embedding model ``(B, 3, 112, 112) [0, 1] -> (B, D)`` and raises ``ModelSpecError``."""
    if name in list_weight_formats() or name in _LOADERS:
        raise ValueError(f"pretrained format {name!r} is already registered")
    _LOADERS[name] = load


register_pretrained_loader("safetensors", load_safetensors)


def list_pretrained_formats() -> list[str]:
    """Format names accepted before the ``:`` of a SPEC."""
    return sorted([*list_weight_formats(), *_LOADERS])


def parse_spec(spec: str) -> tuple[str, Path]:
    """Split ``"<format>:<path>"`` into a registered format name and a path (not checked to exist)."""
    fmt, sep, path = spec.partition(":")
    if not sep or not path:
        raise ModelSpecError(
            f"pretrained model SPEC {spec!r} must look like '<format>:<path>', format one of {list_pretrained_formats()}"
        )
    if fmt not in list_pretrained_formats():
        raise ModelSpecError(
            f"unknown pretrained format {fmt!r} in SPEC {spec!r}; choose one of {list_pretrained_formats()}"
        )
    return fmt, Path(path).expanduser()


def load_pretrained(spec: str) -> nn.Module:
    """Build the model of ``spec = "<format>:<path>"`` and load its weights strictly; returned in eval mode.

    Weights-only formats give a model mapping RGB ``(B, 3, 112, 112)`` in ``[0, 1]`` to embeddings
    ``(B, model.embedding_dim)`` (not L2-normalised) exposing ``grid_channels``,
    ``grid_tap(x) -> (B, grid_channels, 7, 7)`` and ``embed_from_grid(grid) -> (B, embedding_dim)``;
    ``safetensors`` gives back the exported model (an ``XCosModel`` or one of those).
    """
    fmt, path = parse_spec(spec)
    if fmt in _LOADERS:
        return _LOADERS[fmt](path).eval()
    return load_weights_file(build_pretrained(fmt), path, fmt).eval()
