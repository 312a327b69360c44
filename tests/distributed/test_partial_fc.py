"""PartialFC on 2 CPU processes (gloo) against a single-process full FC on the same global batch."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from xcos_lightning.models.margins import MarginHead
from xcos_lightning.models.partial_fc import PartialFC, class_range

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import head_worker as worker  # noqa: E402


def _spawn(case: str, world: int, out: Path) -> list[dict]:
    proc = subprocess.run([sys.executable, str(HERE / "head_worker.py"), case, str(world), str(out)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(world)]


def test_class_ranges_are_contiguous_and_cover_every_class():
    for c, w in ((37, 2), (10, 3), (93_431, 64), (5, 5)):
        ranges = [class_range(c, r, w) for r in range(w)]
        assert ranges[0][0] == 0 and ranges[-1][1] == c
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        assert max(e - s for s, e in ranges) - min(e - s for s, e in ranges) <= 1


def test_initial_matrix_does_not_depend_on_the_world_size():
    head = PartialFC(8, 200_000, seed=5)  # spans chunks of 65,536 classes
    rows = [head._initial_rows(*class_range(200_000, r, 3)) for r in range(3)]
    torch.testing.assert_close(torch.cat(rows), head._initial_rows(0, 200_000), rtol=0, atol=0)


@pytest.fixture(scope="module")
def exact(tmp_path_factory) -> list[dict]:
    return _spawn("exact", 2, tmp_path_factory.mktemp("exact"))


@pytest.mark.parametrize("margin", sorted(worker.MARGINS))
def test_two_ranks_equal_the_full_fc_on_the_global_batch(exact, margin):
    s, m1, m2, m3 = worker.MARGINS[margin]
    ranks = [r[margin] for r in exact]
    torch.testing.assert_close(ranks[0]["weight"], ranks[1]["weight"], rtol=0, atol=0)
    full = MarginHead(worker.D, worker.C, s=s, m1=m1, m2=m2, m3=m3)
    with torch.no_grad():
        full.weight.copy_(ranks[0]["weight"])
    emb, labels = worker.global_batch(2)
    emb.requires_grad_(True)
    loss, acc = full.loss(emb, labels)
    loss.backward()
    for r in ranks:
        assert abs(r["loss"].item() - loss.item()) <= 1e-5 and r["acc"].item() == acc.item()
        torch.testing.assert_close(r["weight_grad"], full.weight.grad, rtol=0, atol=1e-5)
    # Each rank's embedding gradient is 2x the full one (DDP then averages the backbone gradients over 2).
    got = torch.cat([r["emb_grad"] for r in ranks]) / 2
    torch.testing.assert_close(got, emb.grad, rtol=0, atol=1e-5)
    assert emb.grad.abs().max() > 1e-3  # the comparison is not of zeros


def test_one_rank_is_the_plain_full_fc():
    head = PartialFC(worker.D, worker.C, s=64.0, m2=0.5)
    head.shard()
    full = MarginHead(worker.D, worker.C, s=64.0, m2=0.5)
    with torch.no_grad():
        full.weight.copy_(head.weight)
    emb, labels = worker.global_batch(1)
    torch.testing.assert_close(head.loss(emb, labels)[0], full.loss(emb, labels)[0], rtol=0, atol=1e-5)


def test_sampling_keeps_every_positive_is_reproducible_and_the_loss_decreases(tmp_path):
    ranks = _spawn("sampled", 2, tmp_path)
    for r in ranks:
        local = r["labels"] - r["start"]
        here = (local >= 0) & (local < r["end"] - r["start"])
        rows = r["end"] - r["start"]
        assert r["keep"] == max(-(-rows // 10), 12) < rows  # ceil(0.1 * 200) = 20 columns of 200
        for draw in r["draws"]:
            index, target = draw["index"], draw["target"]
            assert torch.equal(index, index.unique())  # sorted, no repeats
            assert set(local[here].tolist()) <= set(index.tolist())  # every positive class scored
            assert torch.equal(index[target[here]], local[here]) and (target[~here] == -1).all()
        assert not torch.equal(r["draws"][0]["index"], r["draws"][1]["index"])  # fresh negatives each step
        assert torch.equal(r["again"], r["draws"][0]["index"])  # the same seed and step draw the same
    losses = ranks[0]["losses"]
    assert ranks[1]["losses"] == losses  # one global loss
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < 0.5 * losses[0], losses
