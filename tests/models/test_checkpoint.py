import os

import pytest
import torch

from xcos_lightning.errors import ModelSpecError, UnsafeFileError
from xcos_lightning.io.checkpoint import build_part, load_xcos_checkpoint, part_config
from xcos_lightning.io.spec import load_model
from xcos_lightning.models import GridBackbone, LearnedAttention, XCosModel


def _save(tmp_path, model: XCosModel, backbone_config: dict) -> str:
    hp = {"backbone": backbone_config, "attention": part_config(model.attention), "xcos": True}
    path = tmp_path / "m.ckpt"
    torch.save({"hyper_parameters": hp, "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)
    return str(path)


def test_round_trip_without_the_recorded_pretrained_file(tmp_path):
    model = XCosModel(GridBackbone("tiny", 8), LearnedAttention(8)).eval()
    config = part_config(model.backbone)
    # A trunk file recorded at training time (relative to another directory) must not be needed.
    config["init_args"]["trunk_kwargs"]["pretrained"] = "../gone/weights.pt"
    loaded = load_model(_save(tmp_path, model, config))
    a, b = torch.rand(2, 3, 112, 112), torch.rand(2, 3, 112, 112)
    with torch.no_grad():
        assert torch.allclose(loaded(a), model(a))
        assert torch.allclose(loaded.xcos_maps(a, b)[2], model.xcos_maps(a, b)[2])


def test_classes_outside_the_package_are_refused():
    with pytest.raises(UnsafeFileError, match="outside"):
        build_part({"class_path": "os.system", "init_args": {"command": "echo hacked"}})
    with pytest.raises(UnsafeFileError, match="not an nn.Module"):
        build_part({"class_path": "xcos_lightning.models.registry.create_trunk", "init_args": {}})


def test_pickled_code_in_a_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = tmp_path / "evil.ckpt"
    torch.save({"hyper_parameters": Evil(), "state_dict": {}}, path)
    with pytest.raises(UnsafeFileError):
        load_xcos_checkpoint(path)
    assert not marker.exists()


def test_missing_or_foreign_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(ModelSpecError, match="does not exist"):
        load_xcos_checkpoint(tmp_path / "nope.ckpt")
    path = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ModelSpecError, match="no backbone"):
        load_xcos_checkpoint(path)
