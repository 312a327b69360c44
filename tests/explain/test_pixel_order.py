"""The maps' pixel order: random maps seeded per pair, xCos centred on its threshold, W unsigned."""
from __future__ import annotations

import torch

from xcos_lightning.explain import RandomMap, XCosIntrinsic
from xcos_lightning.explain.base import pair_seed


def test_random_maps_are_seeded_per_pair_not_per_call(model, make_pairs):
    img_a, img_b = make_pairs(3)
    explainer = RandomMap(model, seed=4)
    batch = explainer(img_a, img_b, torch.tensor([10, 11, 12]))
    explainer(img_a, img_b)  # other calls in between change nothing
    alone = RandomMap(model, seed=4)(img_a[2:], img_b[2:], torch.tensor([12]))
    torch.testing.assert_close(alone.raw_a, batch.raw_a[2:], rtol=0, atol=0)
    torch.testing.assert_close(alone.raw_b, batch.raw_b[2:], rtol=0, atol=0)
    # The map is the pair's own generator's draw: uniform in [-1, 1], different for A and B and per pair.
    want = torch.rand(1, 112, 112, generator=torch.Generator().manual_seed(pair_seed(4, 12, "random/a"))) * 2 - 1
    torch.testing.assert_close(alone.raw_a, want)
    assert not torch.equal(batch.raw_a[0], batch.raw_b[0]) and not torch.equal(batch.raw_a[0], batch.raw_a[1])
    assert not torch.equal(RandomMap(model, seed=5)(img_a[2:], img_b[2:], [12]).raw_a, alone.raw_a)
    smooth = RandomMap(model, seed=4, cells=7)(img_a, img_b, [10, 11, 12])
    assert smooth.raw_a.shape == (3, 112, 112) and smooth.raw_a.abs().max() <= 1


def test_xcos_map_is_the_decision_margin_and_w_is_unsigned(xcos_model, make_pairs):
    img_a, img_b = make_pairs(2)
    t = 0.35
    out = XCosIntrinsic(xcos_model, threshold=t)(img_a, img_b)
    # Nearest upsampling of 7x7 cells to 112 px: each cell is 16 x 16 pixels.
    torch.testing.assert_close(out.raw_a.sum((1, 2)) / 256, out.score - t, rtol=1e-5, atol=1e-6)
    assert out.signed and torch.equal(out.order_keys("a")[1], -out.raw_a)
    w = XCosIntrinsic(xcos_model, threshold=t, map="W")(img_a, img_b)
    sim_key, dis_key = w.order_keys("b")
    assert not w.signed and torch.equal(sim_key, w.extras["W_map"]) and torch.equal(dis_key, sim_key)
