"""Pretrained SPECs: parsing, safe file reading, strict layouts, trunk initialisation."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from xcos_lightning.errors import ModelSpecError, UnsafeFileError
from xcos_lightning.io.pretrained import list_pretrained_formats, load_pretrained, parse_spec
from xcos_lightning.models.iresnet import IRESNET_LAYERS, IResNet
from xcos_lightning.models.registry import create_trunk
from xcos_lightning.weights_file import read_state_dict


def test_formats_and_spec_parsing():
    assert list_pretrained_formats() == [
        "arcface_torch-r100", "arcface_torch-r18", "arcface_torch-r34", "arcface_torch-r50", "mobilefacenet",
        "safetensors",  # files written by explain.py export, which carry their architecture
    ]
    assert parse_spec("arcface_torch-r50:/w/a:b/backbone.pth") == ("arcface_torch-r50", Path("/w/a:b/backbone.pth"))
    for bad in ["backbone.pth", "mobilefacenet:", "resnet:/x.pt"]:
        with pytest.raises(ModelSpecError, match="format"):
            parse_spec(bad)


def test_missing_file_is_named(tmp_path: Path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(ModelSpecError, match="nope.pth"):
        load_pretrained(f"arcface_torch-r18:{missing}")


class _RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_crafted_pickle_is_refused_without_running(tmp_path: Path, writer: str):
    marker, evil = tmp_path / "executed", tmp_path / "evil.pt"
    if writer == "torch.save":
        torch.save({"conv1.weight": _RunsShell(marker)}, evil)
    else:
        evil.write_bytes(pickle.dumps(_RunsShell(marker), protocol=2))
    with pytest.raises(UnsafeFileError, match="evil.pt"):
        load_pretrained(f"mobilefacenet:{evil}")
    assert not marker.exists()


def test_non_state_dict_and_wrong_layout(tmp_path: Path):
    listing = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listing)
    with pytest.raises(ModelSpecError, match="plain state_dict"):
        read_state_dict(listing)
    checkpoint = tmp_path / "checkpoint.pt"  # a training checkpoint of another project
    torch.save({"epoch": 7, "net_state_dict": {"conv1.weight": torch.zeros(1)}, "optimizer": "sgd"}, checkpoint)
    with pytest.raises(ModelSpecError) as err:
        read_state_dict(checkpoint)
    assert str(err.value) == (
        f"{checkpoint} does not hold a plain state_dict ({{name: tensor}}): its top-level keys are 'epoch' (int), "
        "'net_state_dict' (dict), 'optimizer' (str); the weights look like 'net_state_dict': re-save "
        "torch.load(path)['net_state_dict'] alone")
    wrong = tmp_path / "wrong.pt"
    torch.save({"conv1.0.weight": torch.zeros(64, 3, 3, 3), "extra": torch.zeros(1)}, wrong)
    with pytest.raises(ModelSpecError, match="does not fit the 'mobilefacenet' layout: .*missing keys"):
        load_pretrained(f"mobilefacenet:{wrong}")
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(ModelSpecError, match="notes.pt is not a torch file"):
        read_state_dict(text)


@pytest.fixture(scope="module")
def r18_backbone(tmp_path_factory) -> tuple[Path, IResNet]:
    """An arcface_torch-r18 ``backbone.pth`` (full width, as users hold them) and the model that wrote it."""
    torch.manual_seed(0)
    source = IResNet(IRESNET_LAYERS["r18"])
    for bn in (m for m in source.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)):
        bn.running_mean.normal_(0, 0.1)
    path = tmp_path_factory.mktemp("arcface") / "backbone.pth"
    torch.save(source.state_dict(), path)
    return path, source.eval()


def test_arcface_backbone_loads_as_embedding_model(r18_backbone):
    path, source = r18_backbone
    model = load_pretrained(f"arcface_torch-r18:{path}")
    assert not model.training and (model.embedding_dim, model.grid_channels) == (512, 512)
    x = torch.rand(2, 3, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x))


def test_xcos_trunk_initialised_from_backbone(r18_backbone):
    path, source = r18_backbone
    trunk = create_trunk("iresnet18", pretrained=str(path)).eval()
    # every weight of the file except the head after the grid tap point
    head = ("fc.", "features.", "dropout.")
    assert set(trunk.state_dict()) == {k for k in source.state_dict() if not k.startswith(head)}
    x = torch.rand(1, 3, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(trunk(x), source.grid_tap(x))
    with pytest.raises(ModelSpecError, match="width=64"):
        create_trunk("iresnet18", width=8, pretrained=str(path))
