"""The training monitor and ``explain.py benchmark`` are one engine: same pairs, maps, threshold and settings
give the same values."""
from __future__ import annotations

import argparse
import io
import json

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from helpers.threads import one_torch_thread  # noqa: F401 (autouse fixture)
from xcos_lightning.callbacks import ExplanationMonitor
from xcos_lightning.cli import benchmark
from xcos_lightning.datamodules.pair_set import PairSet
from xcos_lightning.models import GridBackbone
from xcos_lightning.module import XCosModule

METHODS = ["random", "gradcam", "corrrise", "xcos", "xssab:blur=true"]


def _png(seed: int, resample: int = Image.BILINEAR) -> bytes:
    low = np.random.default_rng(seed).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(low).resize((112, 112), resample).save(buf, format="PNG")
    return buf.getvalue()


class PairSetData(L.LightningDataModule):
    """A validation-only datamodule over one ``PairSet``."""

    def __init__(self, pair_set: PairSet) -> None:
        super().__init__()
        self.pair_set, self.val_set_names = pair_set, ["toy"]

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.pair_set, batch_size=4)


def test_monitor_and_benchmark_give_identical_values(tmp_path, monkeypatch, capsys):
    faces = [_png(s) for s in range(8)]
    sources = [x for i in range(4) for x in (faces[i], _png(i, Image.BICUBIC))]  # 4 genuine pairs
    sources += [x for i in range(4) for x in (faces[i], faces[4 + i])]  # 4 impostor pairs
    pair_set = PairSet(sources, [True] * 4 + [False] * 4, "toy", size=112).check()
    torch.manual_seed(0)
    module = XCosModule(GridBackbone("tiny", grid_channels=8), num_classes=6, xcos=True, lambda_ce=0.5)

    monitor = ExplanationMonitor(methods=METHODS, protocols=["deletion", "flips"], n_pairs=8, n_masks=8, steps=4,
                                 save_dir=str(tmp_path / "monitor"))
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, callbacks=[monitor])
    trainer.validate(module, datamodule=PairSetData(pair_set))
    logged = json.loads((tmp_path / "monitor/metrics.jsonl").read_text())["scalars"]

    module.eval()
    monkeypatch.setattr(benchmark, "load_model", lambda spec: module.model)
    monkeypatch.setattr(benchmark, "load_pair_set", lambda spec, **options: pair_set)
    parser = argparse.ArgumentParser()
    benchmark.add_parser(parser.add_subparsers())
    args = parser.parse_args(["benchmark", "--model", "m", "--data", "toy", "--methods", ",".join(METHODS),
                              "--pairs", "4", "--steps", "4", "--n-masks", "8", "--protocols", "deletion,flips",
                              "--pair-batch", "1", "--device", "cpu", "--json", "--out", str(tmp_path / "bench")])
    assert benchmark.run(args) == 0
    table = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    settings = json.loads((tmp_path / "bench/results.json").read_text())["settings"]

    assert logged["explain/cost/pairs"] == 8
    # The same rule on the same clean scores (computed in other batch sizes: float rounding apart).
    assert logged["explain/threshold_cos"] == pytest.approx(settings["threshold"], abs=1e-6)
    assert logged["explain/threshold_xcos"] == pytest.approx(settings["threshold_xcos"], abs=1e-6)
    compared = 0
    for method in METHODS:
        for key, value in table[method].items():
            if key == "seconds_per_pair" or value is None:  # timings; protocols not run
                continue
            assert logged[f"explain/{method}/{key}"] == value, (method, key)
            compared += 1
        # Nothing the monitor logs for a method is missing from the benchmark's row.
        mine = {k.split("/", 2)[2] for k in logged if k.startswith(f"explain/{method}/")} - {"seconds_per_pair"}
        assert mine == {k for k, v in table[method].items() if v is not None} - {"seconds_per_pair"}
    assert compared >= len(METHODS) * 7
