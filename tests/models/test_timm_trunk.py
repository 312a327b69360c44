"""Generic trunks: timm models (7x7 check, no downloads), the tiny test trunk and input normalisation."""
from __future__ import annotations

import socket

import pytest
import torch

from xcos_lightning.errors import ModelSpecError
from xcos_lightning.models.normalize import InputNormalize
from xcos_lightning.models.registry import create_trunk, list_trunks


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Any attempt to download weights fails loudly instead of reaching the network."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_timm_resnet18_gives_512x7x7_without_download():
    trunk = create_trunk("timm/resnet18")
    assert trunk.out_channels == 512 and trunk.training  # the shape probe leaves the mode alone
    assert trunk(torch.rand(2, 3, 112, 112)).shape == (2, 512, 7, 7)
    cfg = trunk.body.pretrained_cfg
    torch.testing.assert_close(trunk.normalize.mean.flatten(), torch.tensor(cfg["mean"]))
    torch.testing.assert_close(trunk.normalize.std.flatten(), torch.tensor(cfg["std"]))


def test_timm_model_not_ending_at_7x7_is_refused():
    with pytest.raises(ModelSpecError, match="'resnet18' gives a 4x4"):
        create_trunk("timm/resnet18", output_stride=32)


def test_timm_unknown_model_and_unsupported_output_stride():
    with pytest.raises(ModelSpecError, match="no_such_model"):
        create_trunk("timm/no_such_model")
    with pytest.raises(ModelSpecError, match="output_stride=None"):
        create_trunk("timm/vit_tiny_patch16_224")


def test_tiny_trunk_is_small_and_gives_7x7():
    assert {"tiny", "timm", "mobilefacenet", "iresnet50"} <= set(list_trunks())
    trunk = create_trunk("tiny")
    assert trunk(torch.rand(3, 3, 112, 112)).shape == (3, 32, 7, 7)
    assert sum(p.numel() for p in trunk.parameters()) < 100_000
    assert create_trunk("tiny", channels=16).out_channels == 16


def test_input_normalize_flips_to_bgr_then_standardises():
    x = torch.zeros(1, 3, 2, 2)
    x[:, 0] = 1.0  # pure red
    norm = InputNormalize("bgr", mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 0.5))
    out = norm(x)
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([(0 - 0.1) / 0.5, (0 - 0.2) / 0.5, (1 - 0.3) / 0.5]))
    assert dict(norm.state_dict()) == {} and list(norm.parameters()) == []
    with pytest.raises(ValueError, match="color_order"):
        InputNormalize("yuv")  # type: ignore[arg-type]
