"""Issue 17's explainer fixes: random maps seeded per pair, xCos centred on its threshold (W unsigned), occlusion
strides that hide every pixel, Grad-CAM / xSSAB of the xCos score."""
from __future__ import annotations

import pytest
import torch

from xcos_lightning.errors import ModelSpecError
from xcos_lightning.explain import SRISE, Occlusion, RandomMap, XCosIntrinsic
from xcos_lightning.explain.base import XCosScore, pair_seed
from xcos_lightning.explain.registry import build_explainer
from xcos_lightning.models import LearnedAttention, XCosModel, create_backbone


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


def test_occlusion_rejects_strides_that_leave_pixels_never_hidden(model, make_pairs):
    with pytest.raises(ValueError, match="stride 21 is larger than the largest patch"):
        Occlusion(model, patch_sizes=(7, 14), stride=21)
    # The largest patch equal to the stride covers every pixel: a finite map everywhere.
    out = Occlusion(model, patch_sizes=(14,), stride=14)(*make_pairs(1))
    assert torch.isfinite(out.raw_a).all() and out.raw_a.abs().amax() > 0


def _xcos_model():
    torch.manual_seed(0)
    model = XCosModel(create_backbone("tiny", channels=16), LearnedAttention(32)).eval()
    for m in model.modules():  # BatchNorm statistics away from their initial values
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model


def test_gradient_methods_explain_the_xcos_score(make_pairs):
    model = _xcos_model()
    img_a, img_b = make_pairs(2)
    # The arguments sum to the xCos score, in either order of the pair.
    xcos = XCosScore(model)
    with torch.no_grad():
        score = model.xcos_maps(img_a, img_b)[2]
        grid_a, grid_b = model.grid(img_a), model.grid(img_b)
        torch.testing.assert_close(xcos.arguments(img_a, grid_b, "a").sum(1), score, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(xcos.arguments(img_b, grid_a, "b").sum(1), score, rtol=1e-4, atol=1e-5)
    # Grad-CAM of the xCos score against a hand-written one: d xcos(x, B) / d grid, B's grid fixed.
    with build_explainer("gradcam", model, score="xcos") as cam:
        out = cam(img_a, img_b)
    assert cam.target_layer is model.backbone.head
    x = img_a.clone().requires_grad_(True)
    grid = model.grid(x)
    (grads,) = torch.autograd.grad(model.maps_from_grids(grid, grid_b)[2].sum(), grid)
    want = (grads.mean(dim=(2, 3), keepdim=True) * grid.detach()).sum(1)
    want = torch.nn.functional.interpolate(want[:, None], size=(112, 112), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(out.raw_a, want, rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(out.score, score)
    ssab = build_explainer("xssab", model, score="xcos", threshold=0.1)(img_a, img_b)
    assert torch.isfinite(ssab.raw_a).all() and ssab.sim_a.amax() == 1 and ssab.raw_b.abs().amax() > 0
    plain = create_backbone("tiny", channels=16)
    for name in ("gradcam", "gradcampp", "xssab"):
        with pytest.raises(ModelSpecError, match="xCos"):
            build_explainer(name, XCosModel(plain), score="xcos")


def test_srise_paper_saliency_is_the_score_weighted_sum_of_masks(model, make_pairs):
    img_a, img_b = make_pairs(1)
    paper = SRISE(model, n_masks=12, blobs=10, saliency="paper", fast=False)
    out = paper(img_a, img_b)
    masks = paper.mask_set((112, 112), img_a.device).masks
    with torch.no_grad():
        partner = model(img_b)
        scores = [torch.nn.functional.cosine_similarity(model(img_a * m), partner, dim=1) for m in masks]
    want = sum(s[:, None, None] * m for s, m in zip(scores, masks)) / len(masks)
    torch.testing.assert_close(out.raw_a, want, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="saliency"):
        SRISE(model, saliency="sum")


def test_build_explainer_gives_shared_options_only_where_they_apply(model):
    assert build_explainer("corrrise", model, n_masks=7, seed=3).n_masks == 7
    assert build_explainer("random", model, n_masks=7, seed=3).seed == 3  # n_masks ignored: no masks
    with pytest.raises(ModelSpecError, match="bogus"):
        build_explainer("xssab", model, bogus=1)  # any other option must be the method's own
    with pytest.raises(ModelSpecError, match="no xCos head"):
        build_explainer("xcos", model)
