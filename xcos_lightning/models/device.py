"""Running a face model fast on its device: channels-last memory format, TF32 matmuls, ``torch.compile``.

One setting serves training (``XCosModule(channels_last=...)``), evaluation and explanation
(:func:`prepare_for_device`): ``"auto"`` turns channels-last on for CUDA devices, where cuDNN's NHWC
convolution kernels ran the IResNet-50 training step 2.2x faster on an H200 (BENCHMARKS.md, "GPU"), and
off elsewhere; ``True``/``False`` force it. Channels-last changes strides only, never values or
state-dict keys: a checkpoint saved either way loads into a model in the other format.
"""
from __future__ import annotations

import time
import weakref
from typing import Callable, Literal

import torch
from torch import Tensor, nn

from xcos_lightning.models.backbone import GridBackbone
from xcos_lightning.models.xcos_model import XCosModel

ChannelsLast = bool | Literal["auto"]

# Image-entry module -> its input-conversion hook; weak keys, so a dropped model takes its entry along.
_INPUT_HOOKS: weakref.WeakKeyDictionary[nn.Module, torch.utils.hooks.RemovableHandle] = weakref.WeakKeyDictionary()
_COMPILED: weakref.WeakSet[nn.Module] = weakref.WeakSet()  # trunks compile_trunk has compiled


def use_channels_last(setting: ChannelsLast, device: torch.device | str) -> bool:
    """Whether a model on ``device`` runs channels-last: ``setting`` when a bool, ``"auto"``: on CUDA only."""
    if isinstance(setting, bool):
        return setting
    if setting != "auto":
        raise ValueError(f"channels_last={setting!r}: choose 'auto', true or false")
    return torch.device(device).type == "cuda"


def image_entry(model: nn.Module) -> nn.Module:
    """The submodule every image of ``model`` passes through first: an ``XCosModel``'s backbone (its
    ``grid``, ``forward``, ``xcos_maps`` and ``pair_scores`` all call it), else ``model`` itself."""
    return model.backbone if isinstance(model, XCosModel) else model


def _images_channels_last(module: nn.Module, args: tuple) -> tuple:
    return tuple(a.contiguous(memory_format=torch.channels_last) if isinstance(a, Tensor) and a.ndim == 4 else a
                 for a in args)


def set_channels_last(model: nn.Module, enabled: bool) -> nn.Module:
    """In place: 4-d parameters and buffers of ``model`` in channels-last (``enabled``) or contiguous
    format, and images ``(B, 3, H, W)`` entering :func:`image_entry` converted to the same format
    (``(B, 3, H, W)`` values unchanged). Idempotent; returns ``model``."""
    model.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)
    entry = image_entry(model)
    handle = _INPUT_HOOKS.pop(entry, None)
    if handle is not None:
        handle.remove()
    if enabled:
        _INPUT_HOOKS[entry] = entry.register_forward_pre_hook(_images_channels_last)
    return model


def is_channels_last(model: nn.Module) -> bool:
    """True when :func:`set_channels_last` turned ``model`` channels-last (its images are converted).
    A ``copy.deepcopy`` of such a model keeps the weights' format and the conversion hook but reads False."""
    return image_entry(model) in _INPUT_HOOKS


def prepare_for_device(model: nn.Module, device: torch.device | str, channels_last: ChannelsLast = "auto") -> nn.Module:
    """Move ``model`` to ``device`` in the memory format :func:`use_channels_last` picks (see
    :func:`set_channels_last`); on CUDA also let float32 matmuls use TF32 (``"high"`` precision: 10-bit
    mantissa products, float32 accumulation, as cuDNN convolutions already do by default).
    Returns ``model``, in place."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
    return set_channels_last(model.to(device), use_channels_last(channels_last, device))


def compile_trunk(backbone: GridBackbone, backend: str = "inductor", report: Callable[[str], None] = print) -> None:
    """``torch.compile`` the trunk of a ``GridBackbone`` in place (``nn.Module.compile``: no wrapper, so
    state-dict keys carry no ``_orig_mod.`` and checkpoints load into uncompiled models unchanged).

    Compilation happens lazily at the trunk's first call in each mode (train/eval, with/without autograd:
    Dynamo guards on both); ``report`` receives one line per mode, e.g. ``"compiled trunk (train) in 41.2 s
    (first forward, tracing and compilation; inductor)"``. Under autograd the backward graph compiles at
    the first backward, outside this figure. Idempotent.
    """
    trunk = backbone.trunk
    if trunk in _COMPILED:
        return
    trunk.compile(backend=backend)
    _COMPILED.add(trunk)
    started: dict[tuple[bool, bool], float] = {}
    reported: set[tuple[bool, bool]] = set()

    def mode() -> tuple[bool, bool]:
        return backbone.training, torch.is_grad_enabled()

    def before(module: nn.Module, args: tuple) -> None:
        # Real images only: under torch.fx tracing the arguments are proxies and nothing compiles.
        if mode() not in reported and all(isinstance(a, Tensor) for a in args):
            started[mode()] = time.perf_counter()

    def after(module: nn.Module, args: tuple, output: Tensor) -> None:
        # Nothing here may look at the tensors: torch.fx traces copies of the model (BatchNorm folding for
        # explainers) with these hooks attached, and a proxy cannot decide Python control flow.
        key = mode()
        if key in reported or key not in started:
            return
        if torch.cuda.is_initialized():
            torch.cuda.synchronize()
        reported.add(key)
        label = ("train" if key[0] else "eval") + ("" if key[1] else ", no grad")
        report(f"compiled trunk ({label}) in {time.perf_counter() - started.pop(key):.1f} s "
               f"(first forward, tracing and compilation; {backend})")

    backbone.register_forward_pre_hook(before)
    backbone.register_forward_hook(after)
