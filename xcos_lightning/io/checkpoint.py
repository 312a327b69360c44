"""Load an ``XCosModel`` from a checkpoint of this framework, safely.

The checkpoint is read with ``torch.load(weights_only=True)`` (no code runs while unpickling), and its
recorded parts (``class_path`` + ``init_args``, as LightningCLI saves them) are rebuilt only from
classes inside ``xcos_lightning.models``: a checkpoint cannot make us import or call anything else.
"""
from __future__ import annotations

import importlib
import pickle
import struct
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xcos_lightning.errors import ModelSpecError, UnsafeFileError
from xcos_lightning.models.xcos import LearnedAttention
from xcos_lightning.models.xcos_model import XCosModel

_ALLOWED_PREFIX = "xcos_lightning.models."


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """The checkpoint dict, refusing pickled objects beyond tensors and plain containers.

    Raises UnsafeFileError when the file names other globals (a crafted pickle: nothing of it runs),
    ModelSpecError when it is missing, truncated or not a PyTorch checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelSpecError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's weights-only unpickler names a refused callable as "GLOBAL module.name"; any other
        # refusal is an opcode it cannot parse: random or cut bytes.
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        refused = [line for line in lines if "GLOBAL" in line]
        if not refused:
            detail = next((line for line in lines if "Unsupported" in line or "invalid" in line), lines[0])
            raise ModelSpecError(f"{path}: not a readable PyTorch checkpoint ({detail[:200]}); "
                                 "it is corrupt or truncated: use an earlier checkpoint") from err
        raise UnsafeFileError(f"{path}: refused to load, nothing in it was run: it names code to call while "
                              f"loading ({refused[0][:200]}), which checkpoints of tensors and plain containers "
                              "never do. Only open checkpoints you trust with other tools.") from err
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError, AttributeError,
            OverflowError, MemoryError, struct.error) as err:
        # random bytes reach the unpickler's stack handling and fail in any of these ways
        raise ModelSpecError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: {err}); it is "
                             "corrupt or truncated: use an earlier checkpoint") from err
    if not isinstance(ckpt, dict):
        raise ModelSpecError(f"{path}: holds a {type(ckpt).__name__}, not a checkpoint dict")
    return ckpt


def part_config(part: nn.Module | None) -> dict | None:
    """``{"class_path", "init_args"}`` of a part that records its ``init_args`` (the inverse of ``build_part``)."""
    if part is None:
        return None
    if not hasattr(part, "init_args"):
        raise TypeError(f"{type(part).__name__} does not record init_args; it cannot be rebuilt from a checkpoint")
    return {"class_path": f"{type(part).__module__}.{type(part).__qualname__}", "init_args": dict(part.init_args)}


def build_part(config: dict | None):
    """Instantiate ``{"class_path": ..., "init_args": {...}}`` from an allowed class (recursively)."""
    if config is None:
        return None
    if not isinstance(config, dict) or "class_path" not in config:
        raise ModelSpecError(f"expected a class_path/init_args mapping in the checkpoint, got {config!r}")
    path = config["class_path"]
    if not path.startswith(_ALLOWED_PREFIX):
        raise UnsafeFileError(f"checkpoint names class {path!r}, outside {_ALLOWED_PREFIX}*; refused")
    module_name, _, cls_name = path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise UnsafeFileError(f"checkpoint names {path!r}, which is not an nn.Module class of this package")
    args = {k: build_part(v) if isinstance(v, dict) and "class_path" in v else v
            for k, v in (config.get("init_args") or {}).items()}
    return cls(**args)


def _without_pretrained_init(config: dict) -> dict:
    """The backbone config minus its ``pretrained`` trunk file: the checkpoint's own weights replace it, and
    the recorded path may be relative to another working directory or machine."""
    init_args = dict(config.get("init_args") or {})
    init_args["trunk_kwargs"] = {k: v for k, v in (init_args.get("trunk_kwargs") or {}).items() if k != "pretrained"}
    return {**config, "init_args": init_args}


def load_xcos_checkpoint(path: str | Path) -> XCosModel:
    """``XCosModel`` (eval mode) from a ``.ckpt`` written by ``train.py``; the teacher is not needed."""
    ckpt = read_checkpoint(path)
    hp = ckpt.get("hyper_parameters") or {}
    if not isinstance(hp.get("backbone"), dict):
        raise ModelSpecError(f"{path}: no backbone recorded in the hyper-parameters; was it written by train.py?")
    backbone = build_part(_without_pretrained_init(hp["backbone"]))
    attention = None
    if hp.get("xcos", True):
        attention = build_part(hp.get("attention")) or LearnedAttention(backbone.grid_channels)
    model = XCosModel(backbone, attention)
    state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ModelSpecError(f"{path}: weights do not match the recorded architecture: {err}") from err
    return model.eval()
