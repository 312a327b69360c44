"""Fixtures of the ``explain.py`` end-to-end tests: one torch thread, a tiny xCos checkpoint as train.py
writes it, and a MobileFaceNet saved in the layout of the shared pretrained file."""
from __future__ import annotations

import pytest
import torch

from helpers.threads import one_torch_thread  # noqa: F401 (autouse fixture)
from xcos_lightning.io.checkpoint import part_config
from xcos_lightning.models import LearnedAttention, XCosModel, create_backbone
from xcos_lightning.models.mobilefacenet import MobileFaceNet


@pytest.fixture
def xcos_ckpt(tmp_path):
    """Hyper-parameters + ``model.*`` weights: tiny trunk, learned attention, BatchNorm statistics not at
    their initial values (a lost buffer would show in export parity)."""
    torch.manual_seed(0)
    model = XCosModel(create_backbone("tiny", channels=16), LearnedAttention(32))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    ckpt = tmp_path / "xcos.ckpt"
    torch.save({"hyper_parameters": {"backbone": part_config(model.backbone), "attention": part_config(model.attention),
                                     "xcos": True},
                "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, ckpt)
    return ckpt


@pytest.fixture
def mobilefacenet_spec(tmp_path):
    """SPEC of a randomly initialised MobileFaceNet saved in the layout of the shared pretrained file."""
    torch.manual_seed(0)
    path = tmp_path / "mfn.pt"
    torch.save(MobileFaceNet().state_dict(), path)
    return f"mobilefacenet:{path}"
