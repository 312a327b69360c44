import numpy as np
import torch

from xcos_lightning.datamodules.pair_sampling import PairSampler, TrainPairs


def _pairs(seed=0):
    labels = np.repeat(np.arange(20), 5)
    return TrainPairs(labels, load=lambda i: torch.full((3, 4, 4), float(i)), seed=seed)


def test_partners_are_half_genuine_and_correctly_labelled():
    ds = _pairs()
    draws = [ds.partner(k) for k in range(4 * len(ds))]
    genuine = np.array([g for _, _, g in draws])
    assert 0.42 < genuine.mean() < 0.58
    for a, b, g in draws:
        assert (ds.labels[a] == ds.labels[b]) == g
        assert a != b


def test_items_carry_both_identities():
    item = _pairs()[7]
    assert item["img_a"][0, 0, 0].item() == 7
    assert item["label_a"].item() == 1
    assert bool(item["genuine"]) == (item["label_a"] == item["label_b"]).item()


def test_draws_are_deterministic_and_change_with_epoch():
    a, b = _pairs(), _pairs()
    assert [a.partner(k) for k in range(100)] == [b.partner(k) for k in range(100)]
    assert [a.partner(k)[1] for k in range(100)] != [a.partner(100 + k)[1] for k in range(100)]


def test_sampler_shards_anchors_without_duplicates():
    ds = _pairs()
    shards = []
    for rank in range(2):
        sampler = PairSampler(ds, seed=3)
        sampler.num_replicas, sampler.rank = 2, rank
        sampler.num_samples = len(ds) // 2
        sampler.total_size = len(ds)
        sampler.set_epoch(2)
        shards.append(list(sampler))
    keys = shards[0] + shards[1]
    assert len(set(keys)) == len(ds)
    assert all(k // len(ds) == 2 for k in keys)
    assert set(k % len(ds) for k in keys) == set(range(len(ds)))
