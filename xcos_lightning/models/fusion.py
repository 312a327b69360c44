"""Inference copies of face models for no-grad forwards (evaluation, the perturbation explainers' thousands of
forwards): each eval-mode BatchNorm folded into the convolution (or linear layer) that feeds it.

Folding removes one full pass over every activation map and computes the same function up to float rounding
(about 1e-6 relative in the embeddings): ``bn(conv(x)) = conv'(x)`` with ``W' = W * g``,
``b' = (b - mean) * g + beta`` and ``g = gamma / sqrt(var + eps)``. On CPUs, channels-last weights let oneDNN
skip layout reorders.
"""
from __future__ import annotations

import copy
import warnings
from collections import Counter

import torch
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from xcos_lightning.models.device import image_entry, set_channels_last

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def fuse_conv_bn(model: nn.Module) -> fx.GraphModule:
    """Eval-mode copy of ``model`` with every foldable BatchNorm folded into the layer feeding it.

    The copy is a ``torch.fx.GraphModule`` with ``model.forward``'s signature (other methods are not
    kept); ``model`` is untouched. A BatchNorm is folded when its input is the output of a Conv (or a
    Linear, for BatchNorm1d) that nothing else uses, both are called once per forward, and it tracks
    running statistics; every other layer is kept as it is.

    Raises:
        ValueError: ``model`` is in training mode (BatchNorm uses batch statistics then) or its forward
            cannot be traced symbolically (data-dependent control flow); use the model unfused.
    """
    if model.training:
        raise ValueError(f"{type(model).__name__} is in training mode; call .eval() before folding BatchNorm")
    try:
        traced = fx.symbolic_trace(copy.deepcopy(model))
    except Exception as err:  # tracing user code fails in many ways (TraceError, TypeError, AttributeError, ...)
        raise ValueError(f"cannot trace {type(model).__name__} with torch.fx ({type(err).__name__}: {err}); "
                         "use the model unfused") from err
    modules = dict(traced.named_modules())
    calls = Counter(node.target for node in traced.graph.nodes if node.op == "call_module")
    for node in list(traced.graph.nodes):
        bn = modules.get(node.target) if node.op == "call_module" else None
        source = node.args[0] if node.args else None
        if not (isinstance(bn, _BatchNorm) and bn.running_mean is not None and isinstance(source, fx.Node)
                and source.op == "call_module" and len(source.users) == 1
                and calls[source.target] == calls[node.target] == 1):
            continue
        layer = modules[source.target]
        if isinstance(layer, _CONVS) and layer.out_channels == bn.num_features:
            fused = fuse_conv_bn_eval(layer, bn)
        elif isinstance(layer, nn.Linear) and isinstance(bn, nn.BatchNorm1d) and layer.out_features == bn.num_features:
            fused = fuse_linear_bn_eval(layer, bn)
        else:
            continue
        parent, _, name = source.target.rpartition(".")
        setattr(traced.get_submodule(parent), name, fused)
        node.replace_all_uses_with(source)
        traced.graph.erase_node(node)
    traced.graph.lint()
    traced.recompile()
    traced.delete_all_unused_submodules()
    return traced.eval()


def inference_copy(model: nn.Module, channels_last: bool = False) -> nn.Module:
    """Private eval-mode copy of ``model`` for no-grad forwards: BatchNorm folded (``fuse_conv_bn``) and,
    with ``channels_last``, 4-d weights in channels-last memory format (feed it channels-last images).

    A model that cannot be traced is copied unfused, with a warning. ``model`` is untouched.
    """
    try:
        fast = fuse_conv_bn(model)
    except ValueError as err:
        warnings.warn(f"BatchNorm not folded: {err}", stacklevel=2)
        fast = copy.deepcopy(model).eval()
    return fast.to(memory_format=torch.channels_last) if channels_last else fast


def fast_model(model: nn.Module, channels_last: bool) -> nn.Module:
    """Private eval-mode copy of ``model`` with the same methods, for no-grad forwards: its image entry
    (``image_entry``: an ``XCosModel``'s backbone, which ``grid``, ``forward`` and ``pair_scores`` all call,
    else ``model`` itself) replaced by its ``inference_copy`` (BatchNorm folded), and with ``channels_last``
    channels-last weights and images (``set_channels_last``: callers pass ``(B, 3, H, W)`` as usual). The same
    functions up to float rounding; ``model`` is untouched. The copy does not follow later weight updates."""
    entry = image_entry(model)
    folded = inference_copy(entry)
    if entry is model:
        return set_channels_last(folded, channels_last)
    fast = copy.deepcopy(model).eval()
    fast.backbone = folded  # image_entry of an XCosModel is its backbone
    return set_channels_last(fast, channels_last)
