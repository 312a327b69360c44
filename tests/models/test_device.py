"""Memory format, TF32 and compile switches of ``models.device``, on their own and inside ``XCosModule``."""
from __future__ import annotations

import logging

import lightning as L
import pytest
import torch
from torch import nn

from xcos_lightning.datamodules import SyntheticFacesDataModule
from xcos_lightning.models.fusion import fuse_conv_bn
from xcos_lightning.models import GridBackbone, LearnedAttention, XCosModel
from xcos_lightning.models.device import (
    compile_trunk, is_channels_last, prepare_for_device, set_channels_last, use_channels_last,
)
from xcos_lightning.io.spec import load_model
from xcos_lightning.module import XCosModule

CL = torch.channels_last


def _model(seed: int = 0) -> XCosModel:
    torch.manual_seed(seed)
    return XCosModel(GridBackbone("tiny", grid_channels=8, trunk_kwargs={"channels": 16}), LearnedAttention(8)).eval()


def _first_conv_inputs(model: XCosModel) -> list[torch.Tensor]:
    """Records what the trunk's first convolution receives."""
    seen: list[torch.Tensor] = []
    conv = next(m for m in model.backbone.trunk.modules() if isinstance(m, nn.Conv2d))
    conv.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    return seen


def test_auto_is_channels_last_on_cuda_only_and_bools_force_it():
    assert use_channels_last("auto", "cuda:1") and not use_channels_last("auto", "cpu")
    assert use_channels_last(True, "cpu") and not use_channels_last(False, torch.device("cuda"))
    with pytest.raises(ValueError, match="channels_last='yes'"):
        use_channels_last("yes", "cpu")


def test_channels_last_converts_weights_and_images_and_keeps_the_values():
    reference, model = _model(), _model()
    seen = _first_conv_inputs(model)
    prepare_for_device(model, "cpu", channels_last=True)
    assert is_channels_last(model)
    assert all(p.is_contiguous(memory_format=CL) for p in model.parameters() if p.ndim == 4)
    assert any(not p.is_contiguous() for p in model.parameters() if p.ndim == 4)  # a real change of strides
    a, b = torch.rand(3, 3, 112, 112), torch.rand(3, 3, 112, 112)
    with torch.no_grad():
        # Oracle: the same weights in the default format.
        torch.testing.assert_close(model(a), reference(a), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(model.xcos_maps(a, b)[2], reference.xcos_maps(a, b)[2], rtol=1e-4, atol=1e-5)
    assert seen and all(x.is_contiguous(memory_format=CL) and not x.is_contiguous() for x in seen)


def test_channels_last_switch_is_idempotent_and_reversible():
    model = _model()
    seen = _first_conv_inputs(model)
    set_channels_last(model, True)
    set_channels_last(model, True)
    assert len(model.backbone._forward_pre_hooks) == 1  # one conversion hook, not one per call
    set_channels_last(model, False)
    assert not is_channels_last(model) and not model.backbone._forward_pre_hooks
    assert all(p.is_contiguous() for p in model.parameters())
    with torch.no_grad():
        model(torch.rand(2, 3, 112, 112))
    assert seen[-1].is_contiguous()
    assert not is_channels_last(prepare_for_device(_model(), "cpu"))  # auto on the CPU: off


def test_a_channels_last_state_dict_loads_into_a_contiguous_model():
    source = set_channels_last(_model(seed=1), True)
    target = _model(seed=2)
    target.load_state_dict(source.state_dict())
    x = torch.rand(2, 3, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x), rtol=1e-4, atol=1e-5)
    assert all(p.is_contiguous() for p in target.parameters())


def test_compiled_trunk_keeps_values_and_state_dict_keys_and_reports_each_mode():
    reference, model = _model(), _model()
    lines: list[str] = []
    compile_trunk(model.backbone, backend="eager", report=lines.append)
    compile_trunk(model.backbone, backend="eager", report=lines.append)  # idempotent: one set of hooks
    assert list(model.state_dict()) == list(reference.state_dict())
    assert not any("_orig_mod" in k for k in model.state_dict())
    x = torch.rand(2, 3, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-6)
        model(x)
    model.train()
    model(x).sum().backward()
    assert len(lines) == 2, lines  # eval without grad, then train: one line per mode, not per call
    assert lines[0].startswith("compiled trunk (eval, no grad) in ")
    assert lines[1].startswith("compiled trunk (train) in ")
    assert all(line.endswith("; eager)") for line in lines)


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_a_compiled_channels_last_model_still_folds_batchnorm_for_explainers():
    """Explainers' inference copies trace the model with torch.fx: the switches' hooks must not stop that."""
    model = _model()
    set_channels_last(model, True)
    compile_trunk(model.backbone, backend="eager", report=lambda line: None)
    x = torch.rand(2, 3, 112, 112)
    with torch.no_grad():
        expected = model(x)
        folded = fuse_conv_bn(model)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.backbone.trunk.modules())
        torch.testing.assert_close(folded(x), expected, rtol=1e-4, atol=1e-5)


def test_compiled_channels_last_module_checkpoint_loads_uncompiled(tmp_path):
    """The round trip compiled -> uncompiled: a checkpoint of a fitted XCosModule with both switches on is
    read by the model loader of explain.py (load_model) into a plain model with the same outputs."""
    torch.manual_seed(0)
    module = XCosModule(GridBackbone("tiny", grid_channels=8), num_classes=6, channels_last=True, compile="eager")
    data = SyntheticFacesDataModule(num_train_identities=6, images_per_identity=4, num_val_identities=6,
                                    val_pairs=20, batch_size=4)
    trainer = L.Trainer(accelerator="cpu", max_steps=2, limit_val_batches=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        num_sanity_val_steps=0)
    log = logging.getLogger("lightning.pytorch")  # where rank_zero_info writes
    handler = _Lines()
    log.addHandler(handler)
    try:
        trainer.fit(module, datamodule=data)
    finally:
        log.removeHandler(handler)
    assert any(line.startswith("compiled trunk (train) in ") for line in handler.lines), handler.lines
    assert is_channels_last(module.model)
    ckpt = tmp_path / "compiled.ckpt"
    trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert not any("_orig_mod" in k for k in state) and "model.backbone.trunk.body.0.0.weight" in state

    loaded = load_model(str(ckpt))
    assert isinstance(loaded, XCosModel) and not is_channels_last(loaded)
    module.eval()
    a, b = torch.rand(2, 3, 112, 112), torch.rand(2, 3, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(loaded(a), module.model(a), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(loaded.xcos_maps(a, b)[2], module.model.xcos_maps(a, b)[2], rtol=1e-4, atol=1e-5)
