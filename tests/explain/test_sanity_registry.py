"""Parameter-randomisation sanity test, xCos intrinsic maps and the registry."""
import pytest
import torch
import torch.nn.functional as F

from xcos_lightning.explain import (
    Explainer, XCosIntrinsic, XSSAB, create_explainer, parameter_randomisation_test, randomised_copy,
    register_explainer,
)
from xcos_lightning.models.mobilefacenet import MobileFaceNet


def test_randomised_copy_leaves_original(model):
    before = [p.clone() for p in model.parameters()]
    clone = randomised_copy(model, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    # PReLU slopes re-initialise to their constant 0.25; every conv/linear weight must change.
    weights = [(name, p) for name, p in model.named_parameters() if name.endswith("weight") and p.ndim > 1]
    cloned = dict(clone.named_parameters())
    assert not any(torch.equal(p, cloned[name]) for name, p in weights)
    assert all(torch.equal(a, b) for a, b in zip(clone.parameters(), randomised_copy(model, seed=1).parameters()))


def test_parameter_randomisation(model, make_pairs):
    img_a, img_b = make_pairs(3)
    corr = parameter_randomisation_test(lambda m: XSSAB(m), model, img_a, img_b)
    assert corr.shape == (3,) and (corr.abs() <= 1 + 1e-6).all()
    assert (corr < 0.99).all()
    # An explainer that ignores the model it is given must correlate perfectly with itself.
    same = parameter_randomisation_test(lambda m: XSSAB(model), model, img_a, img_b)
    torch.testing.assert_close(same, torch.ones(3))


def _pairwise_cosines(model, images):
    with torch.no_grad():
        emb = F.normalize(model(images), dim=1)
    return (emb @ emb.T)[~torch.eye(len(images), dtype=torch.bool)]


def test_randomised_batchnorm_model_still_tells_inputs_apart(make_pairs):
    """Reset BatchNorm statistics (mean 0, var 1) make a deep random network map every input to one
    embedding; statistics re-estimated on calibration images keep its embeddings input-dependent."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = MobileFaceNet(width_mult=0.25).eval()
    calibration, held_out = (torch.cat(p) for p in (make_pairs(4, seed=1), make_pairs(4, seed=2)))
    with pytest.raises(ValueError, match="calibration images"):
        randomised_copy(model)
    broken = randomised_copy(model, calibration=calibration)
    for m in broken.modules():  # what a reset without calibration leaves
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
    assert _pairwise_cosines(broken, held_out).min() > 0.999
    random = randomised_copy(model, seed=0, calibration=calibration)
    assert not random.training and all(not m.training for m in random.modules())
    cosines = _pairwise_cosines(random, held_out)
    assert cosines.mean() < 0.9 and cosines.min() < 0.5
    # The test built on it is no longer degenerate: the random model's maps are not flat.
    corr = parameter_randomisation_test(lambda m: XSSAB(m), model, *make_pairs(2, seed=3))
    assert torch.isfinite(corr).all() and (corr.abs() < 0.99).all()


def test_xcos_maps_are_upsampled_contributions(xcos_model, make_pairs):
    img_a, img_b = make_pairs(2)
    out = XCosIntrinsic(xcos_model, threshold=0.2)(img_a, img_b)
    cos_grid, attention = out.extras["S"], out.extras["W"]
    assert cos_grid.shape == attention.shape == (2, 7, 7)
    # Centred on the threshold: each cell's share of the decision margin xcos - t.
    expected = F.interpolate(((cos_grid - 0.2) * attention)[:, None], size=(112, 112), mode="nearest")[:, 0]
    torch.testing.assert_close(out.raw_a, expected)
    torch.testing.assert_close(out.raw_b, out.raw_a)
    torch.testing.assert_close(out.score, (cos_grid * attention).sum((1, 2)))
    assert out.extras["S_map"].shape == (2, 112, 112) and out.threshold == 0.2
    s_only = XCosIntrinsic(xcos_model, map="S")(img_a, img_b)
    torch.testing.assert_close(s_only.raw_a, out.extras["S_map"])
    w_only = XCosIntrinsic(xcos_model, map="W")(img_a, img_b)
    peak = out.extras["W_map"].amax(dim=(1, 2), keepdim=True)
    torch.testing.assert_close(w_only.sim_a, out.extras["W_map"] / peak)
    torch.testing.assert_close(w_only.dis_a, w_only.sim_a)
    with pytest.raises(ValueError, match="map must be one of"):
        XCosIntrinsic(xcos_model, map="SW")


def test_registry_errors():
    with pytest.raises(KeyError, match="unknown explainer"):
        create_explainer("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_explainer("corrrise")(Explainer)
