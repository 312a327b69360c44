"""IResNet keeps insightface arcface_torch's exact key layout, so users' backbone.pth load strictly."""
from __future__ import annotations

import pytest
import torch

from xcos_lightning.models.iresnet import IRESNET_LAYERS, IResNet
from xcos_lightning.models.registry import create_trunk

# From the arcface_torch layout (reference notes section 4), not from our code.
R18_REFERENCE_SHAPES = {
    "conv1.weight": (64, 3, 3, 3),
    "bn1.weight": (64,),
    "prelu.weight": (64,),
    "layer1.0.bn1.weight": (64,),
    "layer1.0.conv1.weight": (64, 64, 3, 3),
    "layer1.0.bn2.running_var": (64,),
    "layer1.0.prelu.weight": (64,),
    "layer1.0.conv2.weight": (64, 64, 3, 3),
    "layer1.0.bn3.bias": (64,),
    "layer1.0.downsample.0.weight": (64, 64, 1, 1),
    "layer1.0.downsample.1.running_mean": (64,),
    "layer2.0.conv1.weight": (128, 64, 3, 3),
    "layer2.0.downsample.0.weight": (128, 64, 1, 1),
    "layer3.1.conv2.weight": (256, 256, 3, 3),
    "layer4.1.bn3.num_batches_tracked": (),
    "bn2.weight": (512,),
    "fc.weight": (512, 25088),
    "fc.bias": (512,),
    "features.weight": (512,),
    "features.running_var": (512,),
}
# stem 7 + 18 per block + 6 per downsampling block (one per stage) + bn2/fc/features 12
KEY_COUNTS = {"r18": 187, "r34": 331, "r50": 475, "r100": 925}
HEAD_PREFIXES = ("fc.", "features.")


def _meta_model(arch: str) -> IResNet:
    with torch.device("meta"):  # full-size layout without allocating weights
        return IResNet(IRESNET_LAYERS[arch])


def test_r18_reference_key_names_and_shapes():
    shapes = {k: tuple(v.shape) for k, v in _meta_model("r18").state_dict().items()}
    for key, shape in R18_REFERENCE_SHAPES.items():
        assert shapes[key] == shape, key
    assert "layer1.1.downsample.0.weight" not in shapes  # only the first block of a stage downsamples


@pytest.mark.parametrize("arch", sorted(KEY_COUNTS))
def test_key_counts_and_depths(arch: str):
    keys = _meta_model(arch).state_dict().keys()
    assert len(keys) == KEY_COUNTS[arch]
    last_blocks = [max(int(k.split(".")[1]) for k in keys if k.startswith(f"layer{i}.")) + 1 for i in range(1, 5)]
    assert tuple(last_blocks) == IRESNET_LAYERS[arch]
    assert "layer4.0.downsample.1.weight" in keys and "normalize.mean" not in keys


def _arcface_state_dict(width: int) -> dict[str, torch.Tensor]:
    """A state_dict in the arcface_torch layout with non-trivial values (incl. BN statistics)."""
    torch.manual_seed(0)
    state = IResNet(IRESNET_LAYERS["r18"], width=width).state_dict()
    for key, value in state.items():
        if value.is_floating_point() and key != "features.weight":
            positive = key.endswith("running_var")
            value.copy_(torch.rand_like(value) * 0.5 + 0.5 if positive else torch.randn_like(value) * 0.05)
    return state


def test_strict_load_into_full_model_and_trunk():
    state = _arcface_state_dict(width=8)
    model = IResNet(IRESNET_LAYERS["r18"], width=8)
    model.load_state_dict(state, strict=True)
    trunk = create_trunk("iresnet18", width=8)
    trunk.load_state_dict({k: v for k, v in state.items() if not k.startswith(HEAD_PREFIXES)}, strict=True)
    model.eval()
    trunk.eval()

    x = torch.rand(2, 3, 112, 112)
    with torch.no_grad():
        grid, emb = trunk(x), model(x)
    assert grid.shape == (2, 64, 7, 7) and emb.shape == (2, 512)
    torch.testing.assert_close(grid, model.grid_tap(x).detach())
    torch.testing.assert_close(emb, model.embed_from_grid(grid).detach())


def test_features_scale_is_frozen_at_one():
    model = IResNet(IRESNET_LAYERS["r18"], width=8)
    assert not model.features.weight.requires_grad
    assert torch.equal(model.features.weight, torch.ones(512))


def test_input_is_normalised_with_half_mean_std_inside():
    # arcface_torch feeds (x - 0.5) / 0.5: a mid-grey image must reach conv1 as zeros.
    model = IResNet(IRESNET_LAYERS["r18"], width=8).eval()
    seen = {}
    model.conv1.register_forward_pre_hook(lambda module, args: seen.update(x=args[0]))
    model(torch.full((1, 3, 112, 112), 0.5))
    assert seen["x"].abs().max() == 0


@pytest.mark.parametrize("name", ["iresnet18", "iresnet34", "iresnet50", "iresnet100"])
def test_registered_trunks_give_512x7x7(name: str):
    with torch.device("meta"):  # shapes only: full-width forwards are slow on CPU
        trunk = create_trunk(name)
        out = trunk(torch.zeros(2, 3, 112, 112))
    assert trunk.out_channels == 512 and tuple(out.shape) == (2, 512, 7, 7)


def test_narrow_trunk_forward():
    trunk = create_trunk("iresnet50", width=4)
    assert trunk(torch.rand(2, 3, 112, 112)).shape == (2, 32, 7, 7)
