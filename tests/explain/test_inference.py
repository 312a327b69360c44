"""Inference copies (BatchNorm folding) and the Grad-CAM layer lookup on the framework's models."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xcos_lightning.errors import ModelSpecError
from xcos_lightning.explain import CorrRISE, GradCAM, default_target_layer, recalibrate_batchnorm
from xcos_lightning.models import LearnedAttention, XCosModel, create_backbone, fuse_conv_bn, inference_copy
from xcos_lightning.models.iresnet import IResNet
from xcos_lightning.models.mobilefacenet import MobileFaceNet


def _with_random_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, so a wrong fold cannot go unnoticed."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
            m.running_var.copy_(0.5 + torch.rand(n, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(n, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(n, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def mobilefacenet() -> MobileFaceNet:
    """Narrow MobileFaceNet with random affine BatchNorm parameters and statistics fitted to smooth
    random images (statistics left at their reset values would map every input to one embedding)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = _with_random_statistics(MobileFaceNet(width_mult=0.25))
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    smooth = F.interpolate(torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(5)), size=(112, 112),
                           mode="bilinear", align_corners=False)
    recalibrate_batchnorm(model, norms, smooth)
    return model


def _batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_fuse_conv_bn_keeps_the_function(mobilefacenet, make_pairs):
    img, _ = make_pairs(3)
    before = copy.deepcopy(mobilefacenet.state_dict())
    fused = fuse_conv_bn(mobilefacenet)
    assert _batchnorms(mobilefacenet) > 40 and _batchnorms(fused) == 0  # all folded, original untouched
    assert all(torch.equal(v, mobilefacenet.state_dict()[k]) for k, v in before.items())
    with torch.no_grad():  # embeddings of unit variance per dimension; float rounding over ~50 layers
        want = mobilefacenet(img)
        torch.testing.assert_close(fused(img), want, rtol=1e-3, atol=2e-4)
        fast = inference_copy(mobilefacenet, channels_last=True)
        torch.testing.assert_close(fast(img.contiguous(memory_format=torch.channels_last)), want, rtol=1e-3, atol=2e-4)


def test_fuse_conv_bn_folds_only_exclusive_chains():
    class Shared(nn.Module):  # the conv output feeds BN and a skip: folding would change the skip
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    model = _with_random_statistics(Shared())
    x = torch.rand(2, 3, 8, 8)
    fused = fuse_conv_bn(model)
    assert _batchnorms(fused) == 1
    torch.testing.assert_close(fused(x), model(x))


def test_fuse_conv_bn_refuses_training_mode_and_untraceable_models():
    class Branchy(nn.Module):  # data-dependent control flow: not traceable
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

        def forward(self, x):
            return self.bn(self.conv(x)) if x.mean() > 0 else x

    with pytest.raises(ValueError, match="training mode"):
        fuse_conv_bn(Branchy().train())
    with pytest.raises(ValueError, match="cannot trace"):
        fuse_conv_bn(Branchy().eval())
    with pytest.warns(UserWarning, match="not folded"):
        copied = inference_copy(Branchy().eval())
    assert _batchnorms(copied) == 1


def test_fast_masked_forwards_match_and_follow_weight_changes(mobilefacenet, make_pairs):
    img_a, img_b = make_pairs(2)
    model = copy.deepcopy(mobilefacenet)
    fast, plain = CorrRISE(model, n_masks=16), CorrRISE(model, n_masks=16, fast=False)
    want, got = plain(img_a, img_b), fast(img_a, img_b)
    assert want.raw_a.abs().amax() > 0.5  # the model reacts to the masks
    # Correlations over 16 scores amplify float rounding (~1e-6 in the scores) to ~1e-4.
    torch.testing.assert_close(got.raw_a, want.raw_a, atol=1e-3, rtol=0)
    torch.testing.assert_close(got.raw_b, want.raw_b, atol=1e-3, rtol=0)
    with torch.no_grad():  # an optimizer step / load_state_dict between two calls
        for p in model.parameters():
            p.mul_(1.1)
    changed, refreshed = plain(img_a, img_b), fast(img_a, img_b)
    assert (changed.raw_a - want.raw_a).abs().amax() > 0.1
    torch.testing.assert_close(refreshed.raw_a, changed.raw_a, atol=1e-3, rtol=0)
    got.raw_a.add_(1)  # maps are ordinary tensors, not inference tensors


@pytest.mark.parametrize("build,expected", [
    (lambda: MobileFaceNet(width_mult=0.25), "conv2"),
    (lambda: IResNet([1, 1, 1, 1], width=8), "bn2"),
    (lambda: XCosModel(create_backbone("tiny"), LearnedAttention(32)), "backbone.head"),
    (lambda: XCosModel(create_backbone("mobilefacenet", width_mult=0.25)), "backbone.head"),
])
def test_default_target_layer(build, expected, make_pairs):
    model = build().eval()
    layer = default_target_layer(model)
    assert layer is model.get_submodule(expected)
    img_a, img_b = make_pairs(1)
    with GradCAM(model) as cam:  # found automatically when target_layer is not given
        assert cam.target_layer is layer
        assert cam(img_a, img_b).sim_a.shape == (1, 112, 112)


def test_default_target_layer_finds_a_grid_that_is_not_7x7(make_pairs):
    # A 112 x 96 face model ends at a 7 x 6 map (no 7 x 7 anywhere); then a global depthwise conv to 1 x 1.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, 4, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 4, 1), nn.PReLU(16),
                          nn.Conv2d(16, 16, (7, 6), groups=16), nn.Flatten(), nn.Linear(16, 8)).eval()
    assert model[:4](torch.zeros(1, 3, 112, 96)).shape[-2:] == (7, 6)
    assert default_target_layer(model, (112, 96)) is model[3]
    img_a, img_b = (x[..., :96] for x in make_pairs(2))
    with GradCAM(model, input_size=(112, 96)) as cam:
        out = cam(img_a, img_b)
    assert out.sim_a.shape == (2, 112, 96) and out.raw_a.abs().amax() > 0
    model.input_size = (112, 96)  # a model that declares its size needs no input_size
    with GradCAM(model) as cam:
        assert cam.target_layer is model[3]


def test_default_target_layer_leaves_a_training_model_as_it_was():
    model = MobileFaceNet(width_mult=0.25).train()
    model.gdconv.eval()
    before = copy.deepcopy(model.state_dict())
    assert default_target_layer(model) is model.conv2
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert model.training and model.conv2.training and not model.gdconv.training


def test_default_target_layer_reports_models_without_a_grid():
    flat = nn.Sequential(nn.Flatten(), nn.Linear(3 * 112 * 112, 8))
    with pytest.raises(ModelSpecError, match="spatial map"):
        default_target_layer(flat)
    with pytest.raises(ModelSpecError, match="target_layer"):
        GradCAM(lambda x: x.flatten(1))
