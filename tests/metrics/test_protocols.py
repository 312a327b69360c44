"""The engine's reporting rules: groups without pairs are absent, groups misclassified clean are flagged."""
from __future__ import annotations

import pytest
import torch

from helpers.threads import one_torch_thread  # noqa: F401 (autouse fixture)
from xcos_lightning.metrics.protocols import MethodResults, ProtocolConfig


def test_empty_groups_are_absent_and_clean_errors_are_flagged():
    # One genuine pair, rejected at every step (the fast_dev_run case of issue 17: cos below the threshold).
    results = MethodResults(ProtocolConfig(protocols=("deletion",), steps=2), threshold=0.9)
    scores = torch.full((1, 1, 3), 0.5)
    results.deletion["zero"].update(scores, scores, torch.tensor([True]), torch.tensor([7]))
    with pytest.warns(UserWarning) as caught:
        scalars = results.scalars("m")
    messages = [str(w.message) for w in caught]
    assert scalars["deletion_genuine"] == scalars["insertion_genuine"] == 0.0
    assert "deletion_impostor" not in scalars and "insertion_impostor" not in scalars  # absent, not NaN
    assert any("no impostor pairs among the" in m and "deletion_impostor" in m for m in messages)
    assert any("misclassified clean at threshold 0.9000" in m for m in messages)
    with pytest.raises(ValueError, match="protocols"):
        ProtocolConfig(protocols=("deletion", "nope"))
    with pytest.raises(ValueError, match="fills"):
        ProtocolConfig(fills=("paint",))


def test_decisions_by_the_xcos_score(monkeypatch, capsys, tmp_path):
    import argparse
    import io
    import json

    import numpy as np
    from PIL import Image

    from xcos_lightning.cli import benchmark
    from xcos_lightning.datamodules.pair_set import PairSet
    from xcos_lightning.explain import RandomMap
    from xcos_lightning.metrics.faithfulness import pair_perturbation_scores, tie_seeds
    from xcos_lightning.metrics.protocols import clean_scores, decision_threshold, verifier
    from xcos_lightning.models import LearnedAttention, XCosModel, create_backbone

    torch.manual_seed(0)
    model = XCosModel(create_backbone("tiny", channels=16), LearnedAttention(32)).eval()
    g = torch.Generator().manual_seed(0)
    img_a, img_b = torch.rand(2, 3, 112, 112, generator=g), torch.rand(2, 3, 112, 112, generator=g)
    grid, xcos = verifier(model, "xcos")
    expl = RandomMap(model, seed=0)(img_a, img_b, [0, 1])
    deleted, inserted = pair_perturbation_scores(grid, img_a, img_b, expl, torch.tensor([True, False]), 2,
                                                 seeds=tie_seeds(0, torch.arange(2)), similarity=xcos)
    clean = model.xcos_maps(img_a, img_b)[2]
    torch.testing.assert_close(deleted[:, 0, 0], clean, rtol=1e-4, atol=1e-5)  # nothing deleted: the clean score
    torch.testing.assert_close(inserted[:, 0, -1], clean, rtol=1e-4, atol=1e-5)  # everything inserted

    def png(seed: int) -> bytes:
        buf = io.BytesIO()
        low = np.random.default_rng(seed).integers(0, 256, (6, 6, 3), dtype=np.uint8)
        Image.fromarray(low).resize((112, 112), Image.BILINEAR).save(buf, format="PNG")
        return buf.getvalue()

    sources = [png(s) for s in range(16)]
    pair_set = PairSet(sources, [True] * 4 + [False] * 4, "toy", size=112).check()
    monkeypatch.setattr(benchmark, "load_model", lambda spec: model)
    monkeypatch.setattr(benchmark, "load_pair_set", lambda spec, **options: pair_set)
    parser = argparse.ArgumentParser()
    benchmark.add_parser(parser.add_subparsers())
    args = parser.parse_args(["benchmark", "--model", "m", "--data", "toy",
                              "--methods", "random,xcos,gradcam:score=xcos",
                              "--pairs", "4", "--steps", "2", "--score", "xcos", "--protocols", "deletion,dpr",
                              "--device", "cpu", "--out", str(tmp_path / "out"), "--bootstrap", "0"])
    assert benchmark.run(args) == 0
    settings = json.loads((tmp_path / "out/results.json").read_text())["settings"]
    items = [pair_set[i] for i in range(8)]
    scores = clean_scores(model, torch.stack([x["img_a"] for x in items]), torch.stack([x["img_b"] for x in items]))
    want = decision_threshold(scores["xcos"], torch.tensor([bool(x["label"]) for x in items]))[1]
    assert settings["decision_score"] == "xcos" and settings["threshold"] == pytest.approx(want, abs=1e-6)
    assert "decisions by the xCos score" in capsys.readouterr().out
