"""The ``package.module:function`` model SPEC: any embedding model from user code, with named errors."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from xcos_lightning.errors import ModelSpecError
from xcos_lightning.io.spec import CallableEmbedding, load_model

USER_CODE = '''
import torch
from torch import nn


def module():
    return nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Dropout(0.5))


def plain_function():
    return lambda x: x.mean(dim=(2, 3))  # (B, 3, H, W) -> (B, 3)


def wrong_shape():
    return lambda x: x


def broken():
    raise RuntimeError("weights not found")


def not_a_model():
    return 3


NOT_CALLABLE = 5
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "user_models.py").write_text(USER_CODE)
    monkeypatch.chdir(tmp_path)  # imported from the working directory
    return "user_models"


def test_module_and_plain_callable(user_module):
    model = load_model(f"{user_module}:module")
    assert isinstance(model, nn.Sequential) and not model.training  # eval mode: the dropout is off
    x = torch.rand(2, 3, 112, 112)
    assert torch.equal(model(x), model(x)) and model(x).shape == (2, 48)
    wrapped = load_model(f"{user_module}:plain_function")
    assert isinstance(wrapped, CallableEmbedding)
    assert torch.allclose(wrapped(x), x.mean(dim=(2, 3)))


@pytest.mark.parametrize("attr, message", [
    ("wrong_shape", "must return float embeddings (B, D), got (1, 3, 112, 112)"),
    ("broken", "broken() failed (RuntimeError: weights not found)"),
    ("not_a_model", "returned int, not an embedding model"),
    ("NOT_CALLABLE", "has no function 'NOT_CALLABLE'"),
    ("missing", "has no function 'missing'"),
])
def test_bad_factories_are_named(user_module, attr, message):
    with pytest.raises(ModelSpecError, match="user_models:" + attr) as info:
        load_model(f"{user_module}:{attr}")
    assert message in str(info.value)


def test_unimportable_module_and_non_specs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelSpecError, match="cannot import module 'nowhere.models'"):
        load_model("nowhere.models:build")
    with pytest.raises(ModelSpecError, match="cannot resolve model SPEC"):
        load_model("runs/x/model.pt:build")  # a path is never imported
