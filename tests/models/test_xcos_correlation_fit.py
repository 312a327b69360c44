"""Training fits CorrelationAttention ("P"): at every epoch start, from the epoch's training pairs, with the current
trunk and the teacher; checkpoints keep the weights. The oracle recomputes the per-cell Pearson correlations with
numpy (``np.corrcoef``) from the trunk as it was when the epoch started."""
from __future__ import annotations

import copy

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from xcos_lightning.callbacks import LastCheckpoint
from xcos_lightning.datamodules import SyntheticFacesDataModule
from xcos_lightning.io.spec import load_model
from xcos_lightning.models import CorrelationAttention, GridBackbone
from xcos_lightning.module import XCosModule

IDENTITIES, IMAGES = 6, 4  # 24 anchors: 24 training pairs per epoch, 6 steps of 4


def _data() -> SyntheticFacesDataModule:
    return SyntheticFacesDataModule(num_train_identities=IDENTITIES, images_per_identity=IMAGES, num_val_identities=6,
                                    val_pairs=20, batch_size=4)


def _trainer(tmp_path, callbacks=(), **kw) -> L.Trainer:
    args = dict(accelerator="cpu", max_steps=3, limit_val_batches=0, logger=False, enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                num_sanity_val_steps=0, callbacks=list(callbacks))
    return L.Trainer(**{**args, **kw})


def _module(fit_pairs: int, **kw) -> XCosModule:
    torch.manual_seed(0)
    return XCosModule(GridBackbone("tiny", grid_channels=8), num_classes=IDENTITIES,
                      attention=CorrelationAttention(fit_pairs=fit_pairs), **kw)


class Snapshot(Callback):
    """Per epoch: a copy of the model as the epoch starts (callback hooks run before the module's, so before the
    fit), the weights training then used (first batch), and the epoch's training dataset."""

    def __init__(self) -> None:
        self.models, self.weights = {}, {}

    def on_train_epoch_start(self, trainer, module) -> None:
        self.models[trainer.current_epoch] = copy.deepcopy(module.model).eval()
        self.pairs = trainer.train_dataloader.dataset

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.weights.setdefault(trainer.current_epoch, module.model.attention.weights.clone())


def _numpy_cosine(a: np.ndarray, b: np.ndarray, axis: int) -> np.ndarray:
    return (a * b).sum(axis) / (np.linalg.norm(a, axis=axis) * np.linalg.norm(b, axis=axis))


@torch.no_grad()
def _oracle(model, teacher, pairs, epoch: int) -> np.ndarray:
    """The weights from every training pair of ``epoch`` (draw keys epoch * N + anchor), brute force."""
    items = [pairs[epoch * len(pairs) + anchor] for anchor in range(len(pairs))]
    img_a, img_b = (torch.stack([item[key] for item in items]) for key in ("img_a", "img_b"))
    ga, gb = model.grid(img_a).double().numpy(), model.grid(img_b).double().numpy()  # (N, G, h, w)
    cells = _numpy_cosine(ga, gb, axis=1)  # (N, h, w)
    if teacher is None:  # teacher "self": the cosine of the flattened grids
        target = _numpy_cosine(ga.reshape(len(ga), -1), gb.reshape(len(gb), -1), axis=1)
    else:
        target = _numpy_cosine(teacher(img_a).double().numpy(), teacher(img_b).double().numpy(), axis=1)
    h, w = cells.shape[1:]
    corr = np.array([[np.corrcoef(cells[:, i, j], target)[0, 1] for j in range(w)] for i in range(h)])
    clipped = np.clip(corr, 0, None)
    return clipped / clipped.sum()


def test_every_epoch_fits_the_weights_of_its_trunk_and_the_checkpoint_keeps_them(tmp_path):
    snap = Snapshot()
    module = _module(fit_pairs=10_000)  # more than there are: every pair of the epoch
    trainer = _trainer(tmp_path, [snap], max_steps=-1, max_epochs=2)
    trainer.fit(module, datamodule=_data())
    assert sorted(snap.weights) == [0, 1]
    for epoch in (0, 1):
        expected = _oracle(snap.models[epoch], None, snap.pairs, epoch)
        np.testing.assert_allclose(snap.weights[epoch].double().numpy(), expected, rtol=1e-4, atol=1e-6)
    uniform = torch.full((7, 7), 1 / 49)
    assert (snap.weights[0] - uniform).abs().max() > 0.005  # fitted, not left uniform
    assert (snap.weights[1] - snap.weights[0]).abs().max() > 1e-4  # refitted to the trained trunk
    ckpt = tmp_path / "fitted.ckpt"
    trainer.save_checkpoint(ckpt)
    loaded = load_model(str(ckpt))  # what explain.py verify --model <ckpt> loads
    assert torch.equal(loaded.attention.weights, snap.weights[1])


def test_a_teacher_supplies_the_target_and_a_subset_of_pairs_is_drawn(tmp_path):
    teacher_trainer = _trainer(tmp_path / "t", max_steps=2)
    teacher_trainer.fit(XCosModule(GridBackbone("tiny", grid_channels=8), num_classes=IDENTITIES, xcos=False,
                                   lambda_ce=1.0), datamodule=_data())
    teacher_ckpt = tmp_path / "teacher.ckpt"
    teacher_trainer.save_checkpoint(teacher_ckpt)

    snap = Snapshot()
    module = _module(fit_pairs=10_000, teacher=str(teacher_ckpt))
    _trainer(tmp_path, [snap], max_steps=1).fit(module, datamodule=_data())
    teacher = load_model(str(teacher_ckpt))
    np.testing.assert_allclose(snap.weights[0].double().numpy(), _oracle(snap.models[0], teacher, snap.pairs, 0),
                               rtol=1e-4, atol=1e-6)
    # Not the "self" target: the teacher's cosine changes the weights.
    assert np.abs(_oracle(snap.models[0], None, snap.pairs, 0) - snap.weights[0].double().numpy()).max() > 1e-3

    subset = _module(fit_pairs=12, teacher=str(teacher_ckpt))
    _trainer(tmp_path, max_steps=1).fit(subset, datamodule=_data())
    fitted = subset.model.attention.weights
    assert torch.isclose(fitted.sum(), torch.tensor(1.0)) and (fitted - snap.weights[0]).abs().max() > 1e-4


def test_a_run_resumed_mid_epoch_keeps_the_weights_fitted_at_the_epoch_start(tmp_path):
    first = _module(fit_pairs=10_000)
    trainer = _trainer(tmp_path, [LastCheckpoint(tmp_path / "ck", every_n_train_steps=3)], max_steps=3,
                       enable_checkpointing=True)  # half of the first epoch
    trainer.fit(first, datamodule=_data())
    ckpt = tmp_path / "ck/last.ckpt"
    assert torch.load(ckpt, weights_only=True)["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"] == 0
    saved = first.model.attention.weights.clone()

    snap, data = Snapshot(), _data()
    _trainer(tmp_path, [snap], max_steps=5).fit(_module(fit_pairs=10_000), datamodule=data, ckpt_path=ckpt)
    assert torch.equal(snap.weights[0], saved)
    # A refit would have given other weights: the trunk trained for 3 steps since the epoch started.
    refit = _oracle(load_model(str(ckpt)), None, data.train_pairs(), 0)
    assert np.abs(refit - saved.double().numpy()).max() > 1e-4


def test_bad_settings_say_what_is_wrong():
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="fit_pairs=1: a correlation needs at least 2 pairs"):
        CorrelationAttention(fit_pairs=1)
    with pytest.raises(ValueError, match=r"grid_size \(7, 7\) got cell cosines of shape \(7, 6\)"):
        CorrelationAttention().fit(torch.rand(10, 7, 6), torch.rand(10))
    assert CorrelationAttention(grid_size=(7, 6)).fit(torch.rand(10, 7, 6), torch.rand(10)).shape == (7, 6)


def test_a_training_loader_without_train_pairs_is_refused(tmp_path):
    class PlainPairs(SyntheticFacesDataModule):
        def train_dataloader(self):
            pairs = self.train_pairs()
            return torch.utils.data.DataLoader([pairs[key] for key in range(len(pairs))], batch_size=4)

    data = PlainPairs(num_train_identities=IDENTITIES, images_per_identity=IMAGES, num_val_identities=6,
                      val_pairs=20, batch_size=4)
    with pytest.raises(TypeError, match="training loader's dataset is a list"):
        _trainer(tmp_path, max_steps=1).fit(_module(fit_pairs=8), datamodule=data)
