"""Parameter-randomisation sanity test, xCos intrinsic maps and the registry."""
import pytest
import torch
import torch.nn.functional as F

from xcos_lightning.explain import (
    Explainer, XCosIntrinsic, XSSAB, create_explainer, parameter_randomisation_test, randomised_copy,
    register_explainer,
)


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


def test_xcos_maps_are_upsampled_contributions(xcos_model, make_pairs):
    img_a, img_b = make_pairs(2)
    out = XCosIntrinsic(xcos_model, threshold=0.2)(img_a, img_b)
    cos_grid, attention = out.extras["S"], out.extras["W"]
    assert cos_grid.shape == attention.shape == (2, 7, 7)
    expected = F.interpolate((cos_grid * attention)[:, None], size=(112, 112), mode="nearest")[:, 0]
    torch.testing.assert_close(out.raw_a, expected)
    torch.testing.assert_close(out.raw_b, out.raw_a)
    torch.testing.assert_close(out.score, (cos_grid * attention).sum((1, 2)))
    assert out.extras["S_map"].shape == (2, 112, 112) and out.threshold == 0.2


def test_registry_errors():
    with pytest.raises(KeyError, match="unknown explainer"):
        create_explainer("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_explainer("corrrise")(Explainer)
