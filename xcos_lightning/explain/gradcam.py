"""Grad-CAM and Grad-CAM++ adapted to verification: the target is the cosine to the fixed partner.

Similarity target: ``cos(f(x), e_partner.detach())``; dissimilarity target: ``1 - cos`` (same gradients
as ``-cos``). One backward pass serves both, since the dissimilarity gradients are the negated ones.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xcos_lightning.errors import ModelSpecError
from xcos_lightning.explain.base import SCORES, EmbedFn, Explainer, SideMaps, XCosScore, gradients_enabled
from xcos_lightning.explain.registry import register_explainer
from xcos_lightning.io.spec import input_size as model_input_size

Size = int | tuple[int, int]


def default_target_layer(model: nn.Module, size: Size = 112) -> nn.Module:
    """Grad-CAM's target layer, one rule for every caller: the module a model names as its ``grid_layer``
    (``XCosModel``: its grid head), else the block that outputs ``model``'s last spatial map (both sides > 1)
    on a face of ``size`` (``H`` or ``(H, W)``).

    That map is the last convolutional feature grid before pooling/flattening, whatever its size: 7 x 7 for
    the 112 x 112 template, 7 x 6 for a 112 x 96 MobileFaceNet. Found by one probe forward (zeros, eval mode,
    no grad; the model's modes are restored) with hooks on every submodule: the last 4-D output with both
    spatial sides > 1 is the map; of the modules returning that very tensor the outermost (the first to
    start) is taken. This gives ``conv2`` for ``MobileFaceNet`` and ``bn2`` for ``IResNet`` (their grid tap
    points) and ``head`` for a bare ``GridBackbone``. Raises
    ``ModelSpecError`` when no submodule outputs a spatial map (pass ``target_layer`` explicitly then).
    """
    declared = getattr(model, "grid_layer", None)
    if isinstance(declared, nn.Module):
        return declared
    height, width = (size, size) if isinstance(size, int) else size
    started: list[nn.Module] = []
    produced: list[tuple[nn.Module, Tensor]] = []
    sizes: set[tuple[int, int]] = set()

    def before(module: nn.Module, inputs: Any) -> None:
        started.append(module)

    def after(module: nn.Module, inputs: Any, output: Any) -> None:
        if isinstance(output, Tensor) and output.ndim == 4:
            sizes.add(tuple(output.shape[-2:]))
            if min(output.shape[-2:]) > 1:
                produced.append((module, output))

    submodules = [m for m in model.modules() if m is not model]
    handles = [h for m in submodules for h in (m.register_forward_pre_hook(before), m.register_forward_hook(after))]
    first = next((t for t in (*model.parameters(), *model.buffers())), None)
    probe = torch.zeros(1, 3, height, width, device=None if first is None else first.device)
    modes = {m: m.training for m in model.modules()}
    model.eval()  # a training-mode probe would move BatchNorm statistics towards the zero image
    try:
        with torch.no_grad():
            model(probe)
    finally:
        for handle in handles:
            handle.remove()
        for m, training in modes.items():
            m.training = training
    if not produced:
        raise ModelSpecError(f"no layer of {type(model).__name__} outputs a spatial map (both sides > 1) on a "
                             f"{height}x{width} face (4-D output sizes seen: {sorted(sizes, reverse=True) or 'none'}); "
                             "pass GradCAM(..., target_layer=<module>) explicitly")
    grid = produced[-1][1]
    candidates = sorted({m for m, out in produced if out is grid}, key=started.index)
    return candidates[0]


@register_explainer("gradcam")
class GradCAM(Explainer):
    """Grad-CAM on ``target_layer`` (the last spatial conv block), once per side, bilinearly upsampled.

    Channel weights are spatial means of the gradients, so the map for ``1 - cos`` is exactly minus the
    map for ``cos``: similarity = ReLU of the signed map, dissimilarity = ReLU of its negation. Raw maps
    are ``sum_c w_c A_c`` in activation x gradient units.

    A forward hook on ``target_layer`` lives from construction (or the next call after a release) until
    ``release()`` / the end of a ``with`` block; it stores activations only during this explainer's own
    forwards, so the model's other forwards keep nothing alive.

    Args:
        embed_fn: the embedding model (its forward must run ``target_layer``); eval mode.
        target_layer: module whose output ``(B, C, h, w)`` is explained; ``None``: the block of ``embed_fn``
            that outputs its last spatial map on a face of ``input_size`` (``default_target_layer``).
        input_size: ``H`` or ``(H, W)`` of the faces, for finding the default layer; ``None``: the model's declared
            ``input_size`` (``io.spec.input_size``: 112 x 112 unless the model says otherwise).
        score: ``"cos"`` explains the embedding cosine to the fixed partner; ``"xcos"`` the xCos score of an
            xCos model (``XCosScore``: ``xcos(x, B)`` with B's grid fixed, ``xcos(A, x)`` for image B); give it
            the xCos threshold then.
        threshold, batch_size, bf16, channels_last: as ``Explainer``.
    """

    def __init__(self, embed_fn: EmbedFn, target_layer: nn.Module | None = None, threshold: float | None = None,
                 *, input_size: Size | None = None, score: str = "cos", **kwargs) -> None:
        super().__init__(embed_fn, threshold, **kwargs)
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        if score == "xcos":
            XCosScore(embed_fn)  # fails early, naming the model, if it has no xCos score
        self.score = score
        if target_layer is None:
            if not isinstance(embed_fn, nn.Module):
                raise ModelSpecError(f"Grad-CAM needs target_layer for a {type(embed_fn).__name__} embed_fn "
                                     "(layers are only found automatically in an nn.Module)")
            size = model_input_size(embed_fn) if input_size is None else input_size
            target_layer = default_target_layer(embed_fn, size)
        self.target_layer = target_layer
        self._recording = False
        self._activation: Tensor | None = None
        self._hook()

    def _hook(self) -> None:
        if not self._handles:
            self._handles.append(self.target_layer.register_forward_hook(self._store_activation))

    def _store_activation(self, module: nn.Module, inputs: Any, output: Tensor) -> None:
        if self._recording:
            self._activation = output

    def _explain(self, img_a: Tensor, img_b: Tensor) -> tuple[SideMaps, SideMaps, Tensor, dict[str, Any]]:
        if self.score == "xcos":
            return self._explain_xcos(img_a, img_b, lambda x, arguments: self._cam_side(
                x, lambda images: arguments(images).sum(1)))
        return super()._explain(img_a, img_b)

    def _side(self, x: Tensor, partner: Tensor, score: Tensor) -> SideMaps:
        # The clone, made inside the gradient block, is a graph-capable copy of an outer inference_mode tensor.
        return self._cam_side(x, lambda images: F.cosine_similarity(self.embed(images), partner.clone(), dim=1))

    def _cam_side(self, x: Tensor, target: Callable[[Tensor], Tensor]) -> SideMaps:
        """CAMs of images ``x`` for the per-sample scores ``target(x)`` ``(B,)`` (a forward through the model)."""
        self._hook()
        with gradients_enabled():
            # Clones turn tensors made under an outer inference_mode into graph-capable ones.
            x = x.clone().requires_grad_(True)
            self._recording = True
            try:
                scores = target(x)
                activation = self._activation
            finally:
                self._recording, self._activation = False, None
            if activation is None:
                raise RuntimeError("target_layer did not run during embed_fn(x): pass a layer of this model")
            (grads,) = torch.autograd.grad(scores.sum(), activation)  # samples are independent in eval mode
        pos, neg = self._cams(activation.detach().float(), grads.float())
        return SideMaps(*(F.interpolate(m[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
                          for m in (pos, neg)))

    def _cams(self, activation: Tensor, grads: Tensor) -> tuple[Tensor, Tensor]:
        """(similarity, dissimilarity) CAMs ``(B, h, w)`` >= 0 from activations and d cos / d A ``(B, C, h, w)``."""
        signed = (grads.mean(dim=(2, 3), keepdim=True) * activation).sum(1)
        return signed.clamp_min(0), (-signed).clamp_min(0)


@register_explainer("gradcampp")
class GradCAMPlusPlus(GradCAM):
    """Grad-CAM++ (Chattopadhay et al., closed-form alphas for an exponential target) per target.

    The alphas depend on the sign of the gradients' cube, so ``cos`` and ``1 - cos`` get genuinely
    different CAMs; ``raw = sim_cam - dis_cam``.
    """

    def _cams(self, activation: Tensor, grads: Tensor) -> tuple[Tensor, Tensor]:
        return self._cam_pp(activation, grads), self._cam_pp(activation, -grads)

    @staticmethod
    def _cam_pp(activation: Tensor, grads: Tensor) -> Tensor:
        g2, g3 = grads.pow(2), grads.pow(3)
        denominator = 2 * g2 + activation.sum(dim=(2, 3), keepdim=True) * g3
        alphas = torch.where(grads != 0, g2 / torch.where(denominator != 0, denominator, 1.0), 0.0)
        weights = (alphas * grads.clamp_min(0)).sum(dim=(2, 3), keepdim=True)
        return (weights * activation).sum(1).clamp_min(0)
