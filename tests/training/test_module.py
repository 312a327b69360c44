"""In-process tests of XCosModule: logged names, frozen teacher, optimizer split."""
from __future__ import annotations

from functools import partial

import lightning as L
import torch

from xcos_lightning.datamodules import SyntheticFacesDataModule
from xcos_lightning.models import CosFace, GridBackbone, LearnedAttention, PartialCosFace
from xcos_lightning.module import XCosModule
from xcos_lightning.optim import JointOptimizer


def _data(**kw) -> SyntheticFacesDataModule:
    args = dict(num_train_identities=6, images_per_identity=4, num_val_identities=6, val_pairs=20, batch_size=4)
    return SyntheticFacesDataModule(**{**args, **kw})


def _trainer(tmp_path, **kw) -> L.Trainer:
    args = dict(accelerator="cpu", max_steps=3, limit_val_batches=2, logger=False, enable_checkpointing=False,
                enable_progress_bar=False, default_root_dir=tmp_path, num_sanity_val_steps=0)
    return L.Trainer(**{**args, **kw})


def _module(num_classes=6, **kw) -> XCosModule:
    return XCosModule(GridBackbone("tiny", grid_channels=8), num_classes=num_classes, **kw)


def test_fit_logs_hierarchical_names(tmp_path):
    trainer = _trainer(tmp_path, max_steps=6, val_check_interval=3)
    trainer.fit(_module(), datamodule=_data())
    logged = set(trainer.logged_metrics)
    for name in ("train/loss", "train/ce", "train/mse", "val/synth/acc_cos", "val/synth/acc_xcos",
                 "val/synth/eer_threshold_xcos", "val/synth/tar_far1e-3_cos", "train/lr/weights",
                 "train/lr/norms_biases", "train/lr/attention"):
        assert name in logged, logged
    assert abs(float(trainer.logged_metrics["train/lr/attention"]) - 1e-3) < 1e-9  # the default attention_lr
    assert trainer.global_step == 6  # one step per batch although two optimizers train


def test_teacher_stays_frozen_in_eval_through_fit(tmp_path):
    teacher_trainer = _trainer(tmp_path / "t", max_steps=2, enable_checkpointing=True)
    teacher_trainer.fit(_module(xcos=False, lambda_ce=1.0), datamodule=_data())
    ckpt = tmp_path / "teacher.ckpt"
    teacher_trainer.save_checkpoint(ckpt)

    module = _module(teacher=str(ckpt))
    before = {k: v.clone() for k, v in module.teacher.state_dict().items()}
    _trainer(tmp_path).fit(module, datamodule=_data())
    assert not module.teacher.training
    assert not any(m.training for m in module.teacher.modules())
    assert not any(p.requires_grad for p in module.teacher.parameters())
    # BatchNorm running statistics did not drift: the teacher never ran in train mode.
    for k, v in module.teacher.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_optimizer_split_sgd_backbone_adam_attention(tmp_path):
    module = _module(head=partial(CosFace, s=30.0, m=0.35), attention=LearnedAttention(8), milestones=[1],
                     weight_decay=1e-3)
    trainer = _trainer(tmp_path, max_epochs=2, max_steps=-1, limit_train_batches=2)
    trainer.fit(module, datamodule=_data())
    opt = trainer.optimizers[0]
    assert isinstance(opt, JointOptimizer)
    sgd, adam = opt.optimizers
    assert isinstance(sgd, torch.optim.SGD) and isinstance(adam, torch.optim.Adam)
    assert {id(p) for p in adam.param_groups[0]["params"]} == {id(p) for p in module.model.attention.parameters()}
    decay, no_decay = sgd.param_groups
    assert decay["weight_decay"] == 1e-3 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim <= 1 for p in no_decay["params"])  # BN/PReLU/bias never decayed
    assert sgd.param_groups[0]["lr"] == 0.1 * 0.1  # milestone at epoch 1 passed
    assert adam.param_groups[0]["lr"] == 1e-3


class _SyncCounter(L.Callback):
    """Host syncs (``aten::_local_scalar_dense``: every ``item()`` / ``bool()`` of a tensor) made by
    xcos_lightning code itself during training steps 2-4 (not by torch.optim or Lightning that it calls),
    with the innermost Python frames that made them."""

    def __init__(self) -> None:
        self.prof, self.found = None, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 2:
            self.prof = torch.profiler.profile(
                activities=[torch.profiler.ProfilerActivity.CPU], with_stack=True,
                experimental_config=torch._C._profiler._ExperimentalConfig(verbose=True))
            self.prof.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == 4:
            self.prof.__exit__(None, None, None)
            events = [e for e in self.prof.events() if e.name == "aten::_local_scalar_dense"]
            assert events, "the profiler saw no sync at all: it did not record"  # torch.optim's CPU steps sync
            self.found = [e.stack[:4] for e in events if _innermost_package(e.stack) == "xcos_lightning"]


def _innermost_package(stack: list[str]) -> str | None:
    """The package of the innermost frame (stacks list it first) in our code, Lightning or torch's Python."""
    for frame in stack:
        for package in ("xcos_lightning/", "lightning/", "torch/"):
            if package in frame:
                return package[:-1]
    return None


def test_a_training_step_makes_no_host_sync(tmp_path):
    counter = _SyncCounter()
    for head in (None, partial(PartialCosFace, s=30.0, m=0.35)):  # the full FC and the sharded head
        _trainer(tmp_path, max_steps=5, limit_val_batches=0, callbacks=[counter],
                 log_every_n_steps=50, gradient_clip_val=5.0).fit(_module(head=head), datamodule=_data())
        assert counter.found == [], counter.found


class _EvalModelSpy(L.Callback):
    """The model each validation batch ran (``XCosModule._eval_model``)."""

    def __init__(self) -> None:
        self.seen: list = []

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.seen.append(pl_module._eval_model)


def test_validation_on_cpu_runs_a_batchnorm_folded_copy_with_the_same_metrics(tmp_path, monkeypatch):
    module = _module()
    _trainer(tmp_path, max_steps=4).fit(module, datamodule=_data())  # BatchNorm statistics moved by training
    spy = _EvalModelSpy()
    folded = _trainer(tmp_path, callbacks=[spy]).validate(module, datamodule=_data())[0]
    copy = spy.seen[0]
    assert copy is not module.model and all(m is copy for m in spy.seen)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in copy.backbone.modules())
    assert module._eval_model is None  # dropped at the epoch's end, not kept beside the model

    monkeypatch.setattr("xcos_lightning.module.forward_copy", lambda model: model)  # the model as trained
    plain = _trainer(tmp_path).validate(module, datamodule=_data())[0]
    assert folded.keys() == plain.keys()
    for key in folded:
        assert abs(folded[key] - plain[key]) < 1e-5, (key, folded[key], plain[key])
    assert plain["val/synth/eer_threshold_xcos"] != 0.0  # a continuous value, so equality means equal scores
