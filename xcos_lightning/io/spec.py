"""Model SPECs shared by every command: a ``.ckpt`` of this framework, ``<format>:<path>`` or ``module:function``."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from xcos_lightning.constants import FACE_SIZE
from xcos_lightning.errors import ModelSpecError
from xcos_lightning.io.checkpoint import load_xcos_checkpoint
from xcos_lightning.io.pretrained import list_pretrained_formats, load_pretrained
from xcos_lightning.user_code import import_attribute, is_import_spec

INPUT_SIZE = (FACE_SIZE, FACE_SIZE)  # (H, W) of the ArcFace template: what a model takes unless it declares ``input_size``
OTHER_SIZE = (112, 96)  # the SphereFace-style crop: a second probe finds models whose output depends on the size
# The --model help of every command (one string: the SPEC forms are listed once).
MODEL_SPEC_HELP = ("model SPEC: run.ckpt (of train.py) | mobilefacenet:<file> | arcface_torch-r18|r34|r50|r100:<file> "
                   "| safetensors:<file> (of explain.py export) | package.module:function (imports and runs that "
                   "code: trusted code only)")


class CallableEmbedding(nn.Module):
    """An ``nn.Module`` around a plain embedding callable ``(B, 3, 112, 112) [0, 1] -> (B, D)``, so commands
    can call ``.to()`` / ``.eval()`` on it; its parameters are whatever the callable keeps (none seen here)."""

    def __init__(self, fn: Callable[[Tensor], Tensor], name: str) -> None:
        super().__init__()
        self.fn = fn
        self.name = name
        if hasattr(fn, "input_size"):
            self.input_size = fn.input_size

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name


def input_size(model: nn.Module | Callable) -> tuple[int, int]:
    """The ``(H, W)`` a model takes: its ``input_size`` attribute (e.g. ``(112, 96)``), else 112 x 112."""
    size = getattr(model, "input_size", INPUT_SIZE)
    if isinstance(size, int):
        size = (size, size)
    if not (isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise ModelSpecError(f"{type(model).__name__}.input_size must be (H, W) in pixels, got {size!r}")
    return int(size[0]), int(size[1])


def load_model(spec: str) -> nn.Module:
    """Resolve a model SPEC to an eval-mode embedding model ``(B, 3, 112, 112) [0, 1] -> (B, D)``.

    - ``path/to/run.ckpt``: an ``XCosModel`` (also exposes ``xcos_maps`` when trained with xCos);
    - ``<format>:<path>``: a pretrained model from another project (``mobilefacenet:...``,
      ``arcface_torch-r50:backbone.pth``, ``safetensors:exported.safetensors``; see
      ``xcos_lightning.io.pretrained``);
    - ``package.module:function``: see :func:`load_from_import`. It **imports and runs user code**: use
      it only with code you trust.
    """
    fmt, sep, _ = spec.partition(":")
    if sep and fmt in list_pretrained_formats():
        return load_pretrained(spec)
    if Path(spec).suffix == ".ckpt" or Path(spec).is_file():
        return load_xcos_checkpoint(spec)
    if is_import_spec(spec):
        return load_from_import(spec)
    raise ModelSpecError(f"cannot resolve model SPEC {spec!r}: expected a .ckpt file of this framework, "
                         f"<format>:<path> with format in {list_pretrained_formats()}, or package.module:function")


def load_from_import(spec: str) -> nn.Module:
    """``"package.module:function"`` -> ``function()``, any embedding model, in eval mode.

    The function takes no arguments and returns an ``nn.Module`` or callable mapping RGB
    ``(B, 3, 112, 112)`` float in ``[0, 1]`` to embeddings ``(B, D)``; it normalises its own input (see
    CONTRIBUTING.md). A model made for another face size declares it as an attribute ``input_size = (H, W)``
    (e.g. ``(112, 96)``); every command then crops or aligns faces to that size. Modules are imported from
    ``sys.path`` plus the current directory. The result is checked once on a zero image (must give a ``(1, D)`` floating tensor). Importing runs the module's
    code: trusted code only. Every failure is a ``ModelSpecError`` naming the SPEC.
    """
    module_name, _, attr = spec.partition(":")
    try:
        factory = import_attribute(spec)
    except Exception as exc:  # an import runs arbitrary code: any error means the SPEC is unusable
        raise ModelSpecError(f"model SPEC {spec!r}: cannot import module {module_name!r} "
                             f"({type(exc).__name__}: {exc}); check the name and PYTHONPATH (or, for a "
                             f"weights file, use <format>:<path> with format in {list_pretrained_formats()})") from exc
    if not callable(factory):
        raise ModelSpecError(f"model SPEC {spec!r}: module {module_name!r} has no function {attr!r}")
    try:
        model = factory()
    except Exception as exc:
        raise ModelSpecError(f"model SPEC {spec!r}: {attr}() failed ({type(exc).__name__}: {exc})") from exc
    if not callable(model):
        raise ModelSpecError(f"model SPEC {spec!r}: {attr}() returned {type(model).__name__}, not an embedding "
                             "model (an nn.Module or callable mapping (B, 3, 112, 112) images to (B, D))")
    model = model if isinstance(model, nn.Module) else CallableEmbedding(model, spec)
    model.eval()
    input_size(model)  # a malformed declaration fails here, naming the attribute
    _probe(model, spec)
    return model


def _run_probe(model: nn.Module, spec: str, size: tuple[int, int]) -> Tensor | Exception:
    param = next(model.parameters(), None)
    x = torch.zeros(1, 3, *size, device=param.device if param is not None else "cpu")
    try:
        with torch.no_grad():
            return model(x)
    except Exception as exc:
        return exc


def _probe(model: nn.Module, spec: str) -> None:
    """Fail early, naming ``spec``, when the model does not map ``(1, 3, H, W)`` (its :func:`input_size`) to
    ``(1, D)``, or when it declares no size and its embedding depends on the size (a flatten + FC model made
    for another crop: a 112 x 96 MobileFaceNet returns 256-d at 112 x 112 instead of failing)."""
    size = input_size(model)
    out = _run_probe(model, spec, size)
    if isinstance(out, Exception):
        raise ModelSpecError(f"model SPEC {spec!r}: the model fails on a (1, 3, {size[0]}, {size[1]}) image "
                             f"({type(out).__name__}: {out}); if it takes another size, give the object its "
                             "factory returns an input_size = (H, W) attribute") from out
    if not (isinstance(out, Tensor) and out.ndim == 2 and out.shape[0] == 1 and out.is_floating_point()):
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ModelSpecError(f"model SPEC {spec!r}: the model must return float embeddings (B, D), got {got}")
    if not hasattr(model, "input_size"):
        other = _run_probe(model, spec, OTHER_SIZE)
        if isinstance(other, Tensor) and other.shape != out.shape:
            raise ModelSpecError(
                f"model SPEC {spec!r}: the embedding has {out.shape[1]} dimensions at 112x112 but "
                f"{other.shape[1]} at {OTHER_SIZE[0]}x{OTHER_SIZE[1]}, so its size matters and none is declared: "
                "give the object its factory returns an input_size = (H, W) attribute (e.g. (112, 96))")
