"""Pretrained face-recognition models from users' files, chosen by a SPEC ``<format>:<path>``.

Formats: ``mobilefacenet`` (the layout of the shared ``mobilefacenet_128d.pt``),
``arcface_torch-r18|r34|r50|r100`` (insightface ``backbone.pth``) and ``safetensors`` (a file written by
``explain.py export --format safetensors``: weights plus the architecture as JSON metadata, rebuilt only
from this package's classes; see ``xcos_lightning.models.export``). Files are read with
``torch.load(weights_only=True)`` or safetensors, so a crafted file cannot run code, and must match the
layout exactly (strict loading). Example::

    model = load_pretrained("arcface_torch-r50:/models/ms1mv3_r50/backbone.pth")
    emb = model(images)                      # (B, 3, 112, 112) RGB [0, 1] -> (B, 512)
    grid = model.grid_tap(images)            # (B, 512, 7, 7), the xCos / Grad-CAM tap point
    trunk = create_trunk("iresnet50", pretrained="/models/ms1mv3_r50/backbone.pth")
"""
from __future__ import annotations

import pickle
import zipfile
from functools import partial
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from xcos_lightning.errors import ModelSpecError, UnsafeFileError
from xcos_lightning.models.iresnet import IRESNET_LAYERS, IResNet
from xcos_lightning.models.mobilefacenet import MobileFaceNet

PretrainedModel = IResNet | MobileFaceNet
_FORMATS: dict[str, Callable[[], PretrainedModel]] = {}
# Formats whose files carry their own architecture: ``load(path) -> eval-mode model``.
_LOADERS: dict[str, Callable[[Path], nn.Module]] = {}


def register_pretrained_format(name: str, build: Callable[[], PretrainedModel]) -> None:
    """Make ``<name>:<path>`` loadable; ``build()`` returns the untrained model the file's weights fill, with
    the interface of ``IResNet``/``MobileFaceNet`` (``embedding_dim``, ``grid_channels``, ``grid_tap``,
    ``embed_from_grid`` and ``HEAD_MODULES``, the top-level modules after the grid tap point)."""
    if name in _FORMATS or name in _LOADERS:
        raise ValueError(f"pretrained format {name!r} is already registered")
    _FORMATS[name] = build


def register_pretrained_loader(name: str, load: Callable[[Path], nn.Module]) -> None:
    """Make ``<name>:<path>`` loadable by ``load(path)``, for files that describe their own architecture;
    ``load`` returns an embedding model ``(B, 3, 112, 112) [0, 1] -> (B, D)`` and raises ``ModelSpecError``."""
    if name in _FORMATS or name in _LOADERS:
        raise ValueError(f"pretrained format {name!r} is already registered")
    _LOADERS[name] = load


def build_pretrained(fmt: str) -> PretrainedModel:
    """The untrained model of a weights-only format (``mobilefacenet``, ``arcface_torch-r50``, ...)."""
    if fmt not in _FORMATS:
        raise ModelSpecError(f"unknown weights-only pretrained format {fmt!r}; choose one of {sorted(_FORMATS)}")
    return _FORMATS[fmt]()


def list_weight_formats() -> list[str]:
    """Formats whose files hold weights only (the architecture comes from the format name)."""
    return sorted(_FORMATS)


def _load_safetensors(path: Path) -> nn.Module:
    # Imported here: export.py builds on this module.
    from xcos_lightning.models.export import load_safetensors

    return load_safetensors(path)


register_pretrained_format("mobilefacenet", MobileFaceNet)
for _arch, _layers in IRESNET_LAYERS.items():
    register_pretrained_format(f"arcface_torch-{_arch}", partial(IResNet, _layers))
register_pretrained_loader("safetensors", _load_safetensors)


def list_pretrained_formats() -> list[str]:
    """Format names accepted before the ``:`` of a SPEC."""
    return sorted([*_FORMATS, *_LOADERS])


def parse_spec(spec: str) -> tuple[str, Path]:
    """Split ``"<format>:<path>"`` into a registered format name and a path (not checked to exist)."""
    fmt, sep, path = spec.partition(":")
    if not sep or not path:
        raise ModelSpecError(
            f"pretrained model SPEC {spec!r} must look like '<format>:<path>', format one of {list_pretrained_formats()}"
        )
    if fmt not in _FORMATS and fmt not in _LOADERS:
        raise ModelSpecError(
            f"unknown pretrained format {fmt!r} in SPEC {spec!r}; choose one of {list_pretrained_formats()}"
        )
    return fmt, Path(path).expanduser()


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a plain ``state_dict`` (``{name: tensor}``) from ``path`` onto the CPU without running pickle code.

    Raises ``ModelSpecError`` for a missing, unreadable or non-state_dict file and ``UnsafeFileError``
    when the file holds objects the weights-only unpickler refuses (it would execute code on load).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelSpecError(f"pretrained weights file {path} does not exist")
    with path.open("rb") as f:
        first_byte = f.read(1)
    # torch.save writes a zip archive (torch >= 1.6) or a legacy pickle, which starts with PROTO (0x80).
    if not (first_byte == b"\x80" or zipfile.is_zipfile(path)):
        raise ModelSpecError(f"{path} is not a torch file (neither a torch.save zip archive nor a legacy pickle)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeFileError(
            f"refused to load {path}: it is not a weights-only torch file (loading it would run arbitrary "
            f"pickle code, or it is corrupt); re-save a plain state_dict from trusted code. "
            f"Detail: {err.__context__ or err}"
        ) from err
    except (RuntimeError, OSError, EOFError, KeyError, ValueError) as err:
        raise ModelSpecError(f"cannot read {path} as a torch state_dict: {type(err).__name__}: {err}") from err
    if not isinstance(state, dict):
        raise ModelSpecError(f"{path} does not hold a plain state_dict ({{name: tensor}}), got {type(state).__name__}")
    if not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise ModelSpecError(f"{path} does not hold a plain state_dict ({{name: tensor}}): {_describe_keys(state)}")
    return state


def _describe_keys(state: dict) -> str:
    """The top-level keys of a non-state_dict ``state`` with their value types, and where its weights may be:
    a training checkpoint (``{"epoch": 3, "net_state_dict": {...}}``) keeps them one level down."""
    keys = ", ".join(f"{k!r} ({type(v).__name__})" for k, v in list(state.items())[:8])
    more = f" and {len(state) - 8} more" if len(state) > 8 else ""
    nested = [k for k, v in state.items() if isinstance(v, dict) and v
              and all(isinstance(t, Tensor) for t in v.values())]
    hint = f"; the weights look like {nested[0]!r}: re-save torch.load(path)[{nested[0]!r}] alone" if nested else ""
    return f"its top-level keys are {keys}{more}{hint}"


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
    state = read_state_dict(path)
    model = _FORMATS[fmt]()
    try:
        # strict=False only to report the key mismatch briefly below; any mismatch is still an error.
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise ModelSpecError(f"{path} does not fit the {fmt!r} layout: {err}") from err
    if result.missing_keys or result.unexpected_keys:
        raise ModelSpecError(
            f"{path} does not fit the {fmt!r} layout: {len(result.missing_keys)} missing keys "
            f"(e.g. {result.missing_keys[:3]}), {len(result.unexpected_keys)} unexpected keys "
            f"(e.g. {result.unexpected_keys[:3]}); check the format name"
        )
    return model.eval()


def trunk_state_dict_from_pretrained(spec: str) -> dict[str, Tensor]:
    """Weights of ``spec``'s model up to its grid tap point, keyed for the matching trunk
    (``mobilefacenet`` -> ``create_trunk("mobilefacenet")``, ``arcface_torch-r50`` -> ``"iresnet50"``, ...):
    ``trunk.load_state_dict(trunk_state_dict_from_pretrained(spec))`` loads strictly."""
    model = load_pretrained(spec)
    return {k: v for k, v in model.state_dict().items() if k.split(".")[0] not in model.HEAD_MODULES}
