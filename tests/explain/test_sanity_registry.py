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


class KnownGrids:
    """``xcos_maps`` with hand-set S, W and score (the score is not sum(S * W): it must be passed through)."""

    S = torch.linspace(-1.0, 1.0, 49).view(1, 7, 7)
    W = torch.arange(1.0, 50.0).view(1, 7, 7) / 1225.0

    def xcos_maps(self, img_a, img_b):
        n = len(img_a)
        return self.S.expand(n, 7, 7), self.W.expand(n, 7, 7), torch.full((n,), 0.123)


def _cell_blocks(grid: torch.Tensor, side: int = 16) -> torch.Tensor:
    """(7, 7) -> (7 * side, 7 * side): each cell a constant side x side block (a loop, not interpolate)."""
    out = torch.empty(7 * side, 7 * side)
    for i in range(7):
        for j in range(7):
            out[i * side:(i + 1) * side, j * side:(j + 1) * side] = grid[i, j]
    return out


def test_xcos_maps_are_upsampled_contributions(make_pairs):
    img_a, img_b = make_pairs(2)
    t = 0.2
    out = XCosIntrinsic(KnownGrids(), threshold=t)(img_a, img_b)
    contribution = _cell_blocks((KnownGrids.S[0] - t) * KnownGrids.W[0])
    for b in range(2):  # each 16 x 16 block of the 112 x 112 maps is its cell's share of the margin
        torch.testing.assert_close(out.raw_a[b], contribution)
        torch.testing.assert_close(out.raw_b[b], contribution)
    torch.testing.assert_close(out.score, torch.full((2,), 0.123))
    assert out.threshold == t
    # Similarity: the positive part of the contribution (cells with S > t), dissimilarity: the rest.
    positive = (KnownGrids.S[0] > t).float()
    assert ((out.sim_a[0] > 0) == (_cell_blocks(positive) > 0)).all()
    assert ((out.dis_a[0] > 0) == (_cell_blocks(1 - positive) > 0)).all()
    s_only = XCosIntrinsic(KnownGrids(), threshold=t, map="S")(img_a, img_b)
    torch.testing.assert_close(s_only.raw_a[0], _cell_blocks(KnownGrids.S[0] - t))
    w_only = XCosIntrinsic(KnownGrids(), map="W")(img_a, img_b)
    torch.testing.assert_close(w_only.sim_a[0], _cell_blocks(KnownGrids.W[0] / KnownGrids.W.max()))
    torch.testing.assert_close(w_only.dis_a, w_only.sim_a)
    with pytest.raises(ValueError, match="map must be one of"):
        XCosIntrinsic(KnownGrids(), map="SW")


def test_xcos_maps_of_a_model_hold_its_own_grids(xcos_model, make_pairs):
    img_a, img_b = make_pairs(2)
    out = XCosIntrinsic(xcos_model, threshold=0.2)(img_a, img_b)
    cos_grid, attention, xcos = xcos_model.xcos_maps(img_a, img_b)
    torch.testing.assert_close(out.extras["S"], cos_grid)
    torch.testing.assert_close(out.extras["W"], attention)
    torch.testing.assert_close(out.score, xcos)
    torch.testing.assert_close(out.raw_a[:, ::16, ::16], (cos_grid - 0.2) * attention)


def test_registry_errors():
    with pytest.raises(KeyError, match="unknown explainer"):
        create_explainer("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_explainer("corrrise")(Explainer)
