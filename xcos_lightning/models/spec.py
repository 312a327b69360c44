"""Model SPECs shared by every command: a ``.ckpt`` of this framework or ``<format>:<path>``."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from xcos_lightning.errors import ModelSpecError


def load_model(spec: str) -> nn.Module:
    """Resolve a model SPEC to an eval-mode embedding model ``(B, 3, 112, 112) [0, 1] -> (B, D)``.

    - ``path/to/run.ckpt``: an ``XCosModel`` (also exposes ``xcos_maps`` when trained with xCos);
    - ``<format>:<path>``: a pretrained model from another project (``mobilefacenet:...``,
      ``arcface_torch-r50:backbone.pth``; see ``xcos_lightning.models.pretrained``).
    """
    from xcos_lightning.models.checkpoint import load_xcos_checkpoint
    from xcos_lightning.models.pretrained import list_pretrained_formats, load_pretrained

    fmt, sep, _ = spec.partition(":")
    if sep and fmt in list_pretrained_formats():
        return load_pretrained(spec)
    if Path(spec).suffix == ".ckpt" or Path(spec).is_file():
        return load_xcos_checkpoint(spec)
    raise ModelSpecError(f"cannot resolve model SPEC {spec!r}: expected a .ckpt file of this framework or "
                         f"<format>:<path> with format in {list_pretrained_formats()}")
