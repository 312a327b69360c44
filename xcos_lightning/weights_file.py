"""Read a weights file safely and load it strictly: the file handling that ``models`` itself needs (a trunk's
``pretrained=`` initialisation), below both ``models`` and ``io``.

Files are read with ``torch.load(weights_only=True)``, so a crafted file cannot run code.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from torch import Tensor, nn

from xcos_lightning.errors import ModelSpecError, UnsafeFileError


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


def load_weights_file(model: nn.Module, path: str | Path, layout: str) -> nn.Module:
    """Load the ``state_dict`` file ``path`` into ``model`` strictly and return ``model``; ``layout`` names the
    expected layout (a pretrained format such as ``arcface_torch-r50``) in the ``ModelSpecError`` of a mismatch."""
    state = read_state_dict(path)
    try:
        # strict=False only to report the key mismatch briefly below; any mismatch is still an error.
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise ModelSpecError(f"{path} does not fit the {layout!r} layout: {err}") from err
    if result.missing_keys or result.unexpected_keys:
        raise ModelSpecError(
            f"{path} does not fit the {layout!r} layout: {len(result.missing_keys)} missing keys "
            f"(e.g. {result.missing_keys[:3]}), {len(result.unexpected_keys)} unexpected keys "
            f"(e.g. {result.unexpected_keys[:3]}); check the format name"
        )
    return model


def load_trunk_weights(trunk: nn.Module, full: nn.Module, path: str | Path, layout: str) -> None:
    """Initialise ``trunk`` from ``path``, the weights of the whole pretrained model ``full`` (layout ``layout``):
    the file must fit ``full`` strictly; ``trunk`` takes its weights before ``full.HEAD_MODULES`` (the top-level
    modules after the grid tap point), whose names match the trunk's."""
    state = load_weights_file(full, path, layout).state_dict()
    trunk.load_state_dict({k: v for k, v in state.items() if k.split(".")[0] not in full.HEAD_MODULES})
