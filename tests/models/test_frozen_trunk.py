"""Frozen trunk parts: no gradients, fixed BatchNorm statistics under train(), recorded for checkpoints."""
from __future__ import annotations

import pytest
import torch

from xcos_lightning.io.checkpoint import part_config
from xcos_lightning.models import GridBackbone


def _backbone(frozen):
    torch.manual_seed(0)
    return GridBackbone("mobilefacenet", grid_channels=8, trunk_kwargs={"width_mult": 0.25}, frozen=frozen)


def test_frozen_parts_get_no_gradient_and_keep_statistics():
    backbone = _backbone(["conv1", "features.0"]).train()
    before = backbone.trunk.conv1[1].running_mean.clone()
    backbone.embed(torch.rand(4, 3, 112, 112)).sum().backward()
    assert all(p.grad is None for p in backbone.trunk.conv1.parameters())
    assert all(p.grad is None for p in backbone.trunk.features[0].parameters())
    assert backbone.trunk.features[1].conv[0][0].weight.grad is not None  # the rest trains
    assert backbone.head.conv.weight.grad is not None
    assert not backbone.trunk.conv1.training and backbone.trunk.features[1].training
    torch.testing.assert_close(backbone.trunk.conv1[1].running_mean, before)
    assert part_config(backbone)["init_args"]["frozen"] == ["conv1", "features.0"]


def test_whole_trunk_frozen():
    backbone = _backbone([""]).train()
    assert not any(p.requires_grad for p in backbone.trunk.parameters())
    assert all(p.requires_grad for p in backbone.head.parameters())
    assert not any(m.training for m in backbone.trunk.modules())


def test_unknown_name_is_reported():
    with pytest.raises(ValueError, match="not submodules"):
        _backbone(["stem"])
