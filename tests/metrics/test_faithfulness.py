"""Deletion / Insertion maths on hand-built embeddings, the PNG plot helper and the benchmark command."""
from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor

from helpers.threads import one_torch_thread  # noqa: F401 (autouse fixture)
from helpers.toy_faces import TinyNet, smooth_png
from xcos_lightning.cli import benchmark
from xcos_lightning.cli.explain import main as explain_main
from xcos_lightning.datamodules.pair_set import PairSet
from xcos_lightning.errors import XCosError
from xcos_lightning.explain.base import PairExplanation, SideMaps
from xcos_lightning.explain.figure import line_plot
from xcos_lightning.explain.registry import parse_method
from xcos_lightning.metrics import DeletionInsertionMetric, pair_perturbation_scores
from xcos_lightning.metrics.faithfulness import (accuracy_curve, area_under_curve, fill_canvas, fraction_grid,
                                                 perturbation_scores, pixel_ranks, tie_seeds)
from xcos_lightning.metrics.protocols import decision_threshold


def explanation(raw: Tensor) -> PairExplanation:
    """Explanation whose signed maps of A and B are ``raw`` ``(B, H, W)``, as an explainer would return it."""
    sim, dis, raw = SideMaps.from_signed(raw).normalised()
    return PairExplanation(sim, dis, sim, dis, raw, raw, torch.zeros(len(raw)), "hand", 0.0)


def seeds(n: int) -> Tensor:
    return tie_seeds(0, torch.arange(n))


def pixel00_embed(x: Tensor) -> Tensor:
    """2-D embedding that sees only channel 0 of pixel (0, 0): ``(x - 0.5, 0.1)``."""
    v = x[:, 0, 0, 0]
    return torch.stack([v - 0.5, torch.full_like(v, 0.1)], dim=1)


def four_pixel_pairs() -> tuple[Tensor, Tensor, Tensor]:
    """2x2 images: genuine pair (A, A) and impostor pair (A, B) with A's pixel (0,0) = 1, B's = 0."""
    a = torch.zeros(2, 3, 2, 2)
    a[:, 0, 0, 0] = 1.0
    b = a.clone()
    b[1, 0, 0, 0] = 0.0
    return a, b, torch.tensor([True, False])


# Signed maps (2x2) putting pixel (0,0) at rank 0, 1 and 3 of the similarity order (distinct values: no ties).
PERFECT = [[1.0, 0.0], [-0.1, -0.2]]
SECOND = [[0.5, 1.0], [0.0, -0.5]]
LAST = [[-1.0, 1.0], [0.5, 0.0]]


@pytest.mark.parametrize("pattern, deletion, insertion", [
    (PERFECT, 12.5, 87.5),   # accuracy [1,0,0,0,0] / [0,1,1,1,1] over p = 0, .25, .5, .75, 1
    (SECOND, 37.5, 62.5),    # [1,1,0,0,0] / [0,0,1,1,1]
    (LAST, 87.5, 12.5),      # [1,1,1,1,0] / [0,0,0,0,1]
])
def test_exact_auc_on_four_pixels(pattern, deletion, insertion):
    a, b, labels = four_pixel_pairs()
    maps = torch.tensor(pattern)
    # The genuine pair follows the similarity order (map descending), the impostor the dissimilarity order
    # (map ascending): the impostor's map is the negation, so both put pixel (0, 0) at the same rank.
    expl = explanation(torch.stack([maps, -maps]))
    d, i = pair_perturbation_scores(pixel00_embed, a, b, expl, labels, steps=4, fill="zero", seeds=seeds(2))
    assert d.shape == i.shape == (2, 1, 5)
    metric = DeletionInsertionMetric(threshold=0.5, steps=4)
    metric.update(d, i, labels, torch.tensor([0, 1]))
    out = metric.compute()
    for group in ("genuine", "impostor"):
        assert out[f"{group}/deletion_auc"] == pytest.approx(deletion)
        assert out[f"{group}/insertion_auc"] == pytest.approx(insertion)
    assert out["genuine/pairs"] == out["impostor/pairs"] == 1


def test_genuine_uses_similarity_and_impostor_dissimilarity_order():
    a, b, labels = four_pixel_pairs()
    maps = torch.tensor(PERFECT).expand(2, 2, 2)  # (0, 0) first in the similarity order, last in the other
    d, _ = pair_perturbation_scores(pixel00_embed, a, b, explanation(maps), labels, steps=4, seeds=seeds(2))
    assert accuracy_curve(d[:1], labels[:1], 0.5).tolist() == [1, 0, 0, 0, 0]
    assert accuracy_curve(d[1:], labels[1:], 0.5).tolist() == [1, 1, 1, 1, 0]


def test_pixel_ranks_order_by_descending_key_and_ties_by_a_seeded_permutation():
    keys = torch.tensor([[[0.2, 0.9, 0.3], [0.8, 0.0, 0.1]]])
    assert pixel_ranks(keys, seeds(1)).flatten().tolist() == [3, 0, 2, 1, 5, 4]
    # A constant map: the order is the seeded permutation (an independent draw with the same seed), not raster.
    flat = torch.zeros(3, 8, 8)
    s = tie_seeds(5, torch.tensor([0, 1, 2]))
    ranks = pixel_ranks(flat, s).flatten(1)
    for row, seed in zip(ranks, s.tolist()):
        perm = torch.randperm(64, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(row[perm], torch.arange(64))
    assert not torch.equal(ranks[0], torch.arange(64)) and not torch.equal(ranks[0], ranks[1])
    assert torch.equal(pixel_ranks(flat, s), pixel_ranks(flat, s))
    # Seeds follow the pair index, not the position in the batch.
    assert torch.equal(pixel_ranks(flat[:1], tie_seeds(5, torch.tensor([2]))), pixel_ranks(flat, s)[2:])
    with pytest.raises(ValueError, match="NaN"):
        pixel_ranks(torch.tensor([[[float("nan")]]]), seeds(1))


def test_a_map_and_its_negation_swap_the_two_orders():
    g = torch.Generator().manual_seed(0)
    raw = torch.randn(2, 6, 6, generator=g).round(decimals=1)  # ties included
    s = seeds(2)
    sim, dis = explanation(raw).order_keys("a")
    sim_neg, dis_neg = explanation(-raw).order_keys("a")
    assert torch.equal(pixel_ranks(sim, s), pixel_ranks(dis_neg, s))
    assert torch.equal(pixel_ranks(dis, s), pixel_ranks(sim_neg, s))
    # One total order per map: where values differ, dissimilarity is the similarity order reversed.
    distinct = torch.randn(2, 6, 6, generator=g)
    sim, dis = explanation(distinct).order_keys("a")
    assert torch.equal(pixel_ranks(sim, s) + pixel_ranks(dis, s), torch.full((2, 6, 6), 35))


def test_fill_canvases():
    x = torch.rand(2, 3, 16, 16)
    assert fill_canvas(x, "zero").abs().sum() == 0
    mean = fill_canvas(x, "mean")
    assert torch.allclose(mean[:, :, 5, 7], x.mean(dim=(2, 3)))
    blur = fill_canvas(x, "blur")
    assert blur.shape == x.shape and blur.std() < x.std()
    with pytest.raises(ValueError, match="fill"):
        fill_canvas(x, "noise")


def test_area_under_curve_is_trapezoid_in_percent():
    f = fraction_grid(4)
    assert area_under_curve(torch.ones(5), f) == pytest.approx(100.0)
    assert area_under_curve(1 - f, f) == pytest.approx(50.0)


def region_setup(pairs: int = 6, seed: int = 0):
    """3x16x16 genuine pairs and an embedding that sees only a 6x6 region R (14% of the pixels)."""
    g = torch.Generator().manual_seed(seed)
    region = torch.zeros(16, 16, dtype=torch.bool)
    region[4:10, 5:11] = True
    a = torch.rand(pairs, 3, 16, 16, generator=g)
    b = (a + 0.05 * torch.randn(pairs, 3, 16, 16, generator=g)).clamp(0, 1)

    def embed(x: Tensor) -> Tensor:
        return x[:, :, region].flatten(1) - 0.5

    return embed, a, b, region


def test_perfect_map_beats_random_beats_adversarial():
    embed, a, b, region = region_setup()
    labels = torch.ones(len(a), dtype=torch.bool)
    perfect = region.float().expand(len(a), -1, -1)
    maps = {"perfect": perfect, "random": torch.rand(len(a), 16, 16, generator=torch.Generator().manual_seed(1)),
            "adversarial": 1 - perfect}
    auc = {}
    for name, m in maps.items():
        metric = DeletionInsertionMetric(threshold=0.5, steps=32)
        d, i = pair_perturbation_scores(embed, a, b, explanation(m), labels, steps=32, seeds=seeds(len(a)))
        metric.update(d, i, labels, torch.arange(len(a)))
        out = metric.compute()
        auc[name] = (out["genuine/deletion_auc"], out["genuine/insertion_auc"])
    assert auc["perfect"][0] < 15 < auc["random"][0] < 85 < auc["adversarial"][0]
    assert auc["perfect"][1] > 85 > auc["random"][1] > 15 > auc["adversarial"][1]


def test_both_sides_and_deduplication():
    embed, a, b, region = region_setup(pairs=4)
    labels = torch.tensor([True, True, False, False])
    m = torch.rand(4, 16, 16, generator=torch.Generator().manual_seed(2))
    d, i = pair_perturbation_scores(embed, a, b, explanation(m - 0.5), labels, steps=5, sides="both", seeds=seeds(4))
    assert d.shape == i.shape == (4, 2, 6)
    d_b, _ = perturbation_scores(embed, b, embed(a), torch.where(labels[:, None, None], m, 1 - m), steps=5,
                                 seeds=seeds(4))
    assert torch.allclose(d[:, 1], d_b)
    single, padded = DeletionInsertionMetric(0.5, steps=5), DeletionInsertionMetric(0.5, steps=5)
    single.update(d, i, labels, torch.arange(4))
    # DDP padding: rank 1 repeats pairs 0 and 3 after its own share.
    padded.update(d[:2], i[:2], labels[:2], torch.tensor([0, 1]))
    padded.update(d[[2, 3, 0, 3]], i[[2, 3, 0, 3]], labels[[2, 3, 0, 3]], torch.tensor([2, 3, 0, 3]))
    assert padded.compute() == single.compute()
    # Each AUC is the mean of the per-pair AUCs over its group (the trapezoid is linear).
    computed = single.compute()
    for name, (values, group) in padded.per_pair().items():
        assert values.shape == group.shape == (4,)
        assert float(values[group].mean()) == pytest.approx(computed[name])
    with pytest.raises(ValueError, match="steps"):
        pair_perturbation_scores(embed, a, b, explanation(m), labels, steps=0, seeds=seeds(4))


def test_line_plot_writes_png(tmp_path):
    xs = fraction_grid(4).tolist()
    path = line_plot({"a": (xs, [1, 0.5, 0.2, 0.1, 0]), "b": (xs, [0, 0.3, float("nan"), 0.8, 1])},
                     tmp_path / "curves.png", title="t", xlabel="fraction", ylabel="accuracy", size=(400, 300))
    img = Image.open(path)
    assert img.format == "PNG" and img.size == (400, 300)
    colours = {c for _, c in img.convert("RGB").getcolors(maxcolors=1 << 16)}
    assert (0, 114, 178) in colours and (213, 94, 0) in colours  # first two palette entries were drawn


def _benchmark_parser(monkeypatch, pair_set: PairSet) -> argparse.ArgumentParser:
    """The ``explain.py`` parser with ``benchmark``, whose model is ``TinyNet`` and whose data is ``pair_set``."""
    monkeypatch.setattr(benchmark, "load_model", lambda spec: TinyNet().eval())
    monkeypatch.setattr(benchmark, "load_pair_set", lambda spec, **options: pair_set)
    parser = argparse.ArgumentParser()
    benchmark.add_parser(parser.add_subparsers(dest="command"))
    return parser


def test_benchmark_command_end_to_end(tmp_path, monkeypatch, capsys):
    faces = [smooth_png(s) for s in range(8)]
    sources = [x for i in range(4) for x in (faces[i], smooth_png(i, Image.BICUBIC))]  # 4 genuine pairs
    sources += [x for i in range(4) for x in (faces[i], faces[4 + i])]  # 4 impostor pairs
    parser = _benchmark_parser(monkeypatch, PairSet(sources, [True] * 4 + [False] * 4, "toy", size=48).check())
    args = parser.parse_args(["benchmark", "--model", "tiny", "--data", "toy", "--methods", "random,random:seed=7",
                              "--pairs", "3", "--steps", "4", "--out", str(tmp_path / "out"), "--json",
                              "--device", "cpu", "--threshold", "0.5", "--baseline", "random,random:seed=7,absent"])
    assert args.func(args) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert set(result) == {"random", "random:seed=7"}  # one row per token: options make their own rows
    for key in ("deletion_genuine", "insertion_impostor", "flip_deletion_match", "dpr_fmr_auc", "seconds_per_pair"):
        assert key in result["random"]
    assert "| random |" in (tmp_path / "out" / "table.md").read_text()
    assert (tmp_path / "out" / "table.csv").read_text().startswith("method,deletion_genuine")
    assert json.loads((tmp_path / "out" / "results.json").read_text())["settings"]["threshold"] == 0.5
    assert len(list((tmp_path / "out").glob("*.png"))) == 6
    assert "[benchmark]" in captured.err
    # Paired comparison with the default baseline, from the per-pair values that also average to the table.
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    diff = saved["comparison"]["random"]["random:seed=7"]["deletion_genuine"]
    assert diff["low"] <= diff["mean"] <= diff["high"] and diff["pairs"] == 3
    back = saved["comparison"]["random:seed=7"]["random"]["deletion_genuine"]  # one table per baseline present
    assert back["mean"] == pytest.approx(-diff["mean"]) and set(saved["comparison"]) == {"random", "random:seed=7"}
    assert "Difference from random" in (tmp_path / "out" / "table.md").read_text()
    assert "Difference from random" in captured.out
    rows = list(csv.DictReader(open(tmp_path / "out" / "per_pair.csv")))
    for method in result:
        for metric in ("deletion_genuine", "insertion_impostor", "flip_deletion_match", "dpr_fmr_auc"):
            values = [float(r["value"]) for r in rows if r["method"] == method and r["metric"] == metric]
            assert values and np.mean(values) == pytest.approx(result[method][metric])
    assert {r["label"] for r in rows if r["metric"] == "deletion_genuine"} == {"1"}
    only = parser.parse_args(["benchmark", "--model", "tiny", "--data", "toy", "--methods", "random", "--pairs", "3",
                              "--steps", "4", "--device", "cpu", "--protocols", "deletion,dpr", "--json",
                              "--extra-fills", "blur,mean,road",
                              "--out", str(tmp_path / "dpr")])
    assert benchmark.run(only) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["random"]
    assert row["flip_deletion_match"] is None and row["dpr_fmr_auc"] is not None  # protocols left out: NaN
    for metric in ("deletion_genuine", "insertion_impostor"):  # one column per canvas
        assert all(0 <= row[f"{metric}{suffix}"] <= 100 for suffix in ("", "_blur", "_mean", "_road"))
    table = (tmp_path / "dpr" / "table.md").read_text()
    assert "del gen blur ↓" in table and "ins imp mean ↑" in table and "del gen road ↓" in table
    assert "flip" not in table
    assert len(list((tmp_path / "dpr").glob("*.png"))) == 6
    # Bad input: exit code 2 and one line on stderr, as every explain.py command; --debug gives the traceback.
    for option, value in (("--protocols", "deletion,nope"), ("--extra-fills", "zero")):
        _assert_bad_input(["benchmark", "--model", "tiny", "--data", "toy", "--methods", "random", option, value],
                          value, capsys)
    for methods, message in (("nope", "unknown"), ("random:seed", "not key=value"), ("random:bogus=1", "bogus")):
        _assert_bad_input(["benchmark", "--model", "tiny", "--data", "toy", "--methods", methods, "--pairs", "3",
                           "--steps", "4", "--device", "cpu"], message, capsys)


def _assert_bad_input(argv: list[str], message: str, capsys) -> None:
    """``explain.py`` exits 2 with one ``explain.py benchmark: error:`` line naming ``message`` (after any
    ``[benchmark]`` progress lines), and with ``--debug`` raises the error instead."""
    assert explain_main(argv) == 2
    captured = capsys.readouterr()
    *progress, last = captured.err.splitlines()
    assert captured.out == "" and all(line.startswith("[benchmark] ") for line in progress)
    assert last.startswith("explain.py benchmark: error: ") and message in last
    with pytest.raises(XCosError, match=message):
        explain_main([*argv, "--debug"])
    capsys.readouterr()


def test_benchmark_random_values_do_not_depend_on_the_other_methods(monkeypatch, capsys):
    faces = [smooth_png(s) for s in range(8)]
    sources = [x for i in range(4) for x in (faces[i], smooth_png(i, Image.BICUBIC))]
    sources += [x for i in range(4) for x in (faces[i], faces[4 + i])]
    parser = _benchmark_parser(monkeypatch, PairSet(sources, [True] * 4 + [False] * 4, "toy", size=48).check())
    rows = []
    # Other methods, other batches: a pair's random map and tie order come from its own index alone.
    for methods, batch in (("random", "2"), ("gradcam,random,random:cells=4", "5")):
        args = parser.parse_args(["benchmark", "--model", "tiny", "--data", "toy", "--methods", methods, "--pairs", "3",
                                  "--steps", "4", "--json", "--device", "cpu", "--pair-batch", batch])
        assert benchmark.run(args) == 0
        rows.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["random"])
    for key in rows[0]:
        if key != "seconds_per_pair":
            assert rows[0][key] == rows[1][key], key


def test_benchmark_method_options_parse_to_constructor_arguments():
    assert parse_method("corrrise") == ("corrrise", {})
    assert parse_method("occlusion:stride=16:patch_sizes=16/32") == (
        "occlusion", {"stride": 16, "patch_sizes": (16, 32)})
    assert parse_method("xssab:blur=true:x=0.5:map=W") == ("xssab", {"blur": True, "x": 0.5, "map": "W"})


def test_benchmark_threshold_is_centred_in_the_score_gap():
    # float32 scores: roc() puts the EER threshold 1e-9 below the lowest genuine score, which float32 rounds
    # onto that score; the benchmark moves it into the middle of the gap instead.
    scores = torch.tensor([0.6294, 0.3112, 0.7143, -0.0484, 0.2759, 0.1888], dtype=torch.float32)
    labels = torch.tensor([True, True, True, False, False, False])
    eer, threshold = decision_threshold(scores, labels)
    assert eer == 0.0
    assert threshold == pytest.approx((0.3112 + 0.2759) / 2, abs=1e-6)


def test_benchmark_identification_protocol(tmp_path, monkeypatch, capsys):
    # Four identities in LFW-style folders, two near-identical images each; genuine pairs (own two images),
    # impostor pairs (image 0 of one identity, image 1 of the next).
    paths = {}
    for i in range(4):
        for k, resample in enumerate((Image.BILINEAR, Image.BICUBIC)):
            path = tmp_path / "faces" / f"id{i}" / f"id{i}_{k}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(smooth_png(i, resample))
            paths[i, k] = path
    sources = [p for i in range(4) for p in (paths[i, 0], paths[i, 1])]
    sources += [p for i in range(4) for p in (paths[i, 0], paths[(i + 1) % 4, 1])]
    folder_set = PairSet(sources, [True] * 4 + [False] * 4, "folders", size=48).check()
    parser = _benchmark_parser(monkeypatch, folder_set)
    args = parser.parse_args(["benchmark", "--model", "tiny", "--data", "folders", "--methods", "random,gradcam",
                              "--pairs", "4", "--steps", "4", "--protocols", "identification", "--top-k", "2",
                              "--device", "cpu", "--json", "--out", str(tmp_path / "out")])
    assert benchmark.run(args) == 0
    out = capsys.readouterr()
    row = json.loads(out.out.strip().splitlines()[-1])
    for method in ("random", "gradcam"):
        assert all(0 <= row[method][f"identification_{kind}"] <= 100 for kind in ("deletion", "insertion"))
        assert row[method]["identification_rank1"] is not None and row[method]["deletion_genuine"] is None
        assert row[method]["seconds_per_pair"] > 0
    assert "4 probes" in out.err and "gallery of 4" in out.err  # the image 1s; image 0s are probes
    rows = list(csv.DictReader(open(tmp_path / "out" / "per_pair.csv")))
    values = [float(r["value"]) for r in rows if r["method"] == "gradcam" and r["metric"] == "identification_deletion"]
    assert len(values) == 4 and np.mean(values) == pytest.approx(row["gradcam"]["identification_deletion"])
    assert (tmp_path / "out" / "identification_deletion.png").exists()
    # Identities come from folders: a set of encoded bytes cannot run the protocol.
    bytes_set = PairSet([p.read_bytes() for p in sources], folder_set.labels, "bytes", size=48)
    monkeypatch.setattr(benchmark, "load_pair_set", lambda spec, **options: bytes_set)
    _assert_bad_input(["benchmark", "--model", "tiny", "--data", "b", "--methods", "random", "--pairs", "4",
                       "--protocols", "identification", "--device", "cpu"], "identit", capsys)
