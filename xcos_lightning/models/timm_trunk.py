"""Any timm model as an xCos trunk: its last feature map, which must be 7x7 for a 112x112 face.

Most CNNs have stride 32 (a 4x4 map at 112), so the trunk asks timm for ``output_stride=16`` by
default: the last stage is dilated instead of strided and keeps its channels at 7x7. Weights are
never downloaded (``pretrained=False``); load your own with ``load_state_dict``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from xcos_lightning.constants import FACE_SIZE, GRID_SIZE
from xcos_lightning.errors import ModelSpecError
from xcos_lightning.models.normalize import InputNormalize
from xcos_lightning.models.registry import register_trunk


class TimmTrunk(nn.Module):
    """timm ``features_only`` model: RGB ``(B, 3, 112, 112)`` in ``[0, 1]`` -> ``(B, out_channels, 7, 7)``.

    ``output_stride``: passed to timm (16 gives 7x7 for CNNs); ``None`` builds the model as is, for
    models that do not take the argument (e.g. ViTs, with ``img_size=112``). ``kwargs`` go to
    ``timm.create_model``. Inputs are normalised with the model's ``pretrained_cfg`` mean/std.
    Raises ``ModelSpecError`` when the model cannot be built or its last map is not 7x7 at 112.
    """

    def __init__(self, model_name: str, output_stride: int | None = 16, **kwargs) -> None:
        super().__init__()
        import timm  # here, not at the top: importing timm takes ~3.6 s, which every other model would pay

        if output_stride is not None:
            kwargs["output_stride"] = output_stride
        try:
            self.body = timm.create_model(model_name, features_only=True, pretrained=False, out_indices=(-1,), **kwargs)
        except TypeError as err:
            raise ModelSpecError(
                f"timm model {model_name!r} rejects its arguments {sorted(kwargs)}: {err}; "
                "models without output_stride support need output_stride=None"
            ) from err
        except RuntimeError as err:  # timm's "Unknown model"
            raise ModelSpecError(f"timm cannot build {model_name!r}: {err}") from err
        cfg = self.body.pretrained_cfg
        self.normalize = InputNormalize("rgb", cfg["mean"], cfg["std"])
        self.out_channels: int = self.body.feature_info.channels()[-1]
        self._check_grid(model_name)

    def _check_grid(self, model_name: str) -> None:
        # A real forward, not feature_info's reduction: some models (e.g. fixed-size ViTs) declare a
        # reduction of 16 but cannot take a 112x112 input at all.
        was_training = self.training
        self.eval()  # no BatchNorm statistics updates from the probe
        try:
            with torch.no_grad():
                size = tuple(self(torch.zeros(1, 3, FACE_SIZE, FACE_SIZE)).shape[-2:])
        except (RuntimeError, AssertionError, ValueError) as err:
            raise ModelSpecError(f"timm model {model_name!r} fails on a {FACE_SIZE}x{FACE_SIZE} input: {err}") from err
        finally:
            self.train(was_training)
        if size != (GRID_SIZE, GRID_SIZE):
            raise ModelSpecError(
                f"timm model {model_name!r} gives a {size[0]}x{size[1]} last feature map at {FACE_SIZE}x{FACE_SIZE}; "
                f"xCos needs {GRID_SIZE}x{GRID_SIZE} (total stride 16): try output_stride=16 or another model"
            )

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(B, 3, 112, 112)`` RGB in ``[0, 1]`` -> last feature map ``(B, out_channels, 7, 7)``."""
        return self.body(self.normalize(x))[-1]


@register_trunk("timm")
def timm_trunk(model_name: str, output_stride: int | None = 16, **kwargs) -> TimmTrunk:
    """Trunk from ``timm.create_model(model_name, features_only=True)``, e.g. ``create_trunk("timm/resnet18")``."""
    return TimmTrunk(model_name, output_stride, **kwargs)
