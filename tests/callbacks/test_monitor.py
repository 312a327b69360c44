"""In-process tests of ExplanationMonitor on a tiny xCos model and tiny synthetic data."""
from __future__ import annotations

import csv
import json
import math

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from xcos_lightning.callbacks import ExplanationMonitor, explanation_monitor
from xcos_lightning.callbacks.explanation_monitor import shard, subset_indices
from xcos_lightning.datamodules import SyntheticFacesDataModule
from xcos_lightning.explain import CorrRISE
from xcos_lightning.metrics.protocols import MethodResults, decision_threshold
from xcos_lightning.models import GridBackbone
from xcos_lightning.module import XCosModule

METHODS = ["xcos", "corrrise", "xssab", "gradcam", "random"]
SMALL = dict(n_pairs=4, n_masks=8, steps=4, max_images=2)
DELETION = ("deletion_genuine", "insertion_genuine", "deletion_impostor", "insertion_impostor")
FLIPS = tuple(f"flip_{kind}_{group}" for group in ("match", "nonmatch")
              for kind in ("deletion", "insertion", "unflipped"))


def _data() -> SyntheticFacesDataModule:
    return SyntheticFacesDataModule(num_train_identities=6, images_per_identity=4, num_val_identities=6,
                                    val_pairs=20, batch_size=4)


def _module(xcos: bool = True) -> XCosModule:
    torch.manual_seed(0)
    return XCosModule(GridBackbone("tiny", grid_channels=8), num_classes=6, xcos=xcos,
                      lambda_ce=0.5 if xcos else 1.0)


def _trainer(tmp_path, monitor: ExplanationMonitor, **kw) -> L.Trainer:
    args = dict(accelerator="cpu", max_epochs=1, limit_train_batches=2, logger=CSVLogger(tmp_path, name="csv"),
                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                default_root_dir=tmp_path, num_sanity_val_steps=0, callbacks=[monitor])
    return L.Trainer(**{**args, **kw})


def _jsonl(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "explain/metrics.jsonl").read_text().splitlines()]


def _spy_on_explanations(monkeypatch) -> list[dict]:
    """Record, for every explanation the monitor measures, its method, the autograd mode and its map mass."""
    seen = []
    update = MethodResults.update

    def spy(self, explainer, embed_fn, batch, *args, **kwargs):
        explanation, values = update(self, explainer, embed_fn, batch, *args, **kwargs)
        seen.append({"method": explanation.method, "inference": torch.is_inference_mode_enabled(),
                     "grad": torch.is_grad_enabled(), "mass": float(explanation.sim_a.sum() + explanation.dis_a.sum()),
                     "index": int(batch["index"][0])})
        return explanation, values

    monkeypatch.setattr(MethodResults, "update", spy)
    return seen


def test_rejects_unknown_names_at_construction():
    with pytest.raises(ValueError, match="unknown"):
        ExplanationMonitor(methods=["corrrise", "lime"])
    with pytest.raises(ValueError, match="protocols"):
        ExplanationMonitor(protocols=["auc"])
    with pytest.raises(ValueError, match="protocols"):
        ExplanationMonitor(protocols=["dpr"])  # needs a patched set: the benchmark's
    with pytest.raises(ValueError, match="not in methods"):
        ExplanationMonitor(methods=["corrrise"], explainer_args={"xssab": {"blur": True}})
    with pytest.raises(ValueError, match="n_pairs"):
        ExplanationMonitor(n_pairs=0)


def test_fit_logs_every_method_and_metric_and_keeps_nothing_alive(tmp_path, monkeypatch):
    seen = _spy_on_explanations(monkeypatch)
    monitor = ExplanationMonitor(methods=METHODS, protocols=["deletion", "flips"], **SMALL)
    module = _module()
    trainer = _trainer(tmp_path, monitor)
    trainer.fit(module, datamodule=_data())

    # Every method explained every pair inside fit's validation loop (which runs under no_grad).
    assert sorted({s["method"] for s in seen}) == sorted(METHODS) and len(seen) == 4 * len(METHODS)
    assert not any(s["grad"] for s in seen)
    assert all(s["mass"] > 0 for s in seen if s["method"] in ("xssab", "gradcam"))

    (record,) = _jsonl(tmp_path)
    scalars = record["scalars"]
    for method in METHODS:
        for name in DELETION:
            assert 0 <= scalars[f"explain/{method}/{name}"] <= 100
        # Flips per clean decision; a decision group without pairs is absent, never NaN.
        flips = [name for name in FLIPS if f"explain/{method}/{name}" in scalars]
        assert flips and all(0 <= scalars[f"explain/{method}/{name}"] <= 1 for name in flips)
        assert not any(k.startswith(f"explain/{method}/flip_") and k[len(f"explain/{method}/"):] not in FLIPS
                       for k in scalars)
    assert not any(isinstance(v, float) and math.isnan(v) for v in scalars.values())
    assert scalars["explain/cost/pairs"] == 4
    assert 0 < scalars["explain/cost/epoch_share"] < 1
    # Decisions: the EER threshold of the monitored pairs' single-view clean scores, as in the benchmark.
    pairs = [trainer.datamodule.val_pair_set()[i] for i in subset_indices(20, 4, seed=0)]
    module.eval()  # as during validation
    with torch.no_grad():
        clean = module.model.pair_scores(torch.stack([p["img_a"] for p in pairs]),
                                         torch.stack([p["img_b"] for p in pairs]), flip_tta=False)
    labels = torch.tensor([bool(p["label"]) for p in pairs])
    for kind in ("cos", "xcos"):
        assert scalars[f"explain/threshold_{kind}"] == pytest.approx(decision_threshold(clean[kind], labels)[1])
    assert record["step"] == trainer.global_step == 2

    # A plain logger receives the scalars (and only scalars: media go to W&B alone).
    (metrics_csv,) = tmp_path.glob("csv/*/metrics.csv")
    header = next(csv.reader(metrics_csv.open()))
    assert "explain/gradcam/deletion_genuine" in header and "explain/xssab/flip_deletion_match" in header

    # No hooks (Grad-CAM's included) and no graphs outlive the run.
    for m in module.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks, m


def test_gradient_methods_work_under_validate_inference_mode(tmp_path, monkeypatch):
    seen = _spy_on_explanations(monkeypatch)
    module = _module()
    trainer = _trainer(tmp_path, ExplanationMonitor(methods=["xssab", "gradcam"], **SMALL))
    trainer.validate(module, datamodule=_data())
    assert len(seen) == 8 and all(s["inference"] for s in seen)
    assert all(s["mass"] > 0 and math.isfinite(s["mass"]) for s in seen)
    assert all(p.grad is None for p in module.parameters())  # gradients went to the inputs only
    (record,) = _jsonl(tmp_path)
    assert record["scalars"]["explain/cost/pairs"] == 4 and "explain/xssab/deletion_genuine" in record["scalars"]


def test_same_pairs_every_epoch_and_masks_drawn_once(tmp_path, monkeypatch):
    calls = []
    make_masks = CorrRISE._make_masks
    monkeypatch.setattr(CorrRISE, "_make_masks", lambda self, size: calls.append(size) or make_masks(self, size))
    seen = _spy_on_explanations(monkeypatch)
    monitor = ExplanationMonitor(methods=["corrrise"], **SMALL)
    _trainer(tmp_path, monitor, max_epochs=2).fit(_module(), datamodule=_data())
    assert len(calls) == 1  # the mask set of the kept explainer served both epochs
    indices = [s["index"] for s in seen]
    assert indices[:4] == indices[4:] == subset_indices(20, 4, seed=0)
    assert [r["epoch"] for r in _jsonl(tmp_path)] == [0, 1]

    calls.clear()
    monitor = ExplanationMonitor(methods=["corrrise"], reuse_masks=False, **SMALL)
    _trainer(tmp_path / "fresh", monitor, max_epochs=2).fit(_module(), datamodule=_data())
    assert len(calls) == 2


def test_every_n_epochs_and_time_budget(tmp_path):
    monitor = ExplanationMonitor(methods=["random"], every_n_epochs=2, max_seconds=0.0, **SMALL)
    _trainer(tmp_path, monitor, max_epochs=2).fit(_module(), datamodule=_data())
    (record,) = _jsonl(tmp_path)  # epochs 0 and 1 validated, only epoch 1 (the 2nd) explained
    assert record["epoch"] == 1
    assert record["scalars"]["explain/cost/pairs"] == 1  # the budget was spent after the first pair


def test_model_without_attention_skips_xcos(tmp_path):
    monitor = ExplanationMonitor(methods=["xcos", "random"], **SMALL)
    with pytest.warns(UserWarning, match="no xCos attention"):
        _trainer(tmp_path, monitor).fit(_module(xcos=False), datamodule=_data())
    scalars = _jsonl(tmp_path)[0]["scalars"]
    assert "explain/random/deletion_genuine" in scalars
    assert not any(k.startswith("explain/xcos/") for k in scalars) and "explain/threshold_xcos" not in scalars


def test_unknown_val_set_is_named(tmp_path):
    monitor = ExplanationMonitor(methods=["random"], val_set="lfw", **SMALL)
    with pytest.raises(ValueError, match="val_set 'lfw'"):
        _trainer(tmp_path, monitor).fit(_module(), datamodule=_data())


def test_fixed_threshold_replaces_the_eer_thresholds(tmp_path):
    monitor = ExplanationMonitor(methods=["random"], threshold=0.25, **SMALL)
    _trainer(tmp_path, monitor).fit(_module(), datamodule=_data())
    scalars = _jsonl(tmp_path)[0]["scalars"]
    assert scalars["explain/threshold_cos"] == scalars["explain/threshold_xcos"] == 0.25


@pytest.mark.parametrize("count,world", [(16, 1), (16, 2), (5, 2), (1, 3), (7, 4)])
def test_shards_cover_the_subset_evenly(count, world):
    subset = subset_indices(1000, count, seed=3)
    assert subset == subset_indices(1000, count, seed=3) and len(set(subset)) == count
    shards = [shard(subset, rank, world) for rank in range(world)]
    assert len({len(s) for s in shards}) == 1 and min(len(s) for s in shards) >= 1
    assert sorted(set(sum(shards, []))) == subset


def test_xcos_figure_centres_s_on_the_threshold():
    from xcos_lightning.explain.figure import xcos_figure

    s = torch.full((7, 7), 0.3)
    s[0, 0], s[6, 6] = -0.2, 0.9
    w = torch.full((7, 7), 1 / 49)
    fig = xcos_figure(torch.rand(3, 112, 112), torch.rand(3, 112, 112), s, w, threshold=0.3, side=112)
    assert fig.size == (6 + 4 * (112 + 6), 30 + 16 + 112 + 6)
    s_left, top = 6 + 2 * (112 + 6), 30 + 16
    assert fig.getpixel((s_left + 33, top + 33)) == (247, 247, 247)  # a cell at the threshold is white
    assert fig.getpixel((s_left + 2, top + 2))[2] > 150  # below it: blue
    assert fig.getpixel((s_left + 110, top + 110))[0] > 150  # above it: red



def test_bf16_and_explainer_args_reach_the_explainers(tmp_path, monkeypatch):
    seen, built = _spy_on_explanations(monkeypatch), {}
    build = explanation_monitor.build_explainer
    monkeypatch.setattr(explanation_monitor, "build_explainer",
                        lambda name, model, **kw: built.setdefault(name, build(name, model, **kw)))
    monitor = ExplanationMonitor(methods=["corrrise", "xssab"], bf16=True, explainer_args={"xssab": {"blur": True}},
                                 save_dir=str(tmp_path / "elsewhere"), **{**SMALL, "n_pairs": 2})
    _trainer(tmp_path, monitor).fit(_module(), datamodule=_data())
    assert built["corrrise"].bf16 and built["corrrise"].n_masks == 8 and built["xssab"].blur
    assert len(seen) == 4 and all(math.isfinite(s["mass"]) and s["mass"] > 0 for s in seen)
    (line,) = (tmp_path / "elsewhere/metrics.jsonl").read_text().splitlines()
    assert "explain/xssab/deletion_genuine" in json.loads(line)["scalars"]


def test_an_unwritable_metrics_folder_warns_and_training_goes_on(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the folder should be")
    monitor = ExplanationMonitor(methods=["random"], save_dir=str(blocker / "explain"), **SMALL)
    trainer = _trainer(tmp_path, monitor, max_epochs=2)
    with pytest.warns(UserWarning, match="could not write"):
        trainer.fit(_module(), datamodule=_data())
    assert trainer.current_epoch == 2 and "explain/random/deletion_genuine" in monitor.last_scalars
