"""Every registered method honours the PairExplanation contract for batches of 1 and 4 pairs."""
import pytest
import torch

from xcos_lightning.errors import DataFormatError
from xcos_lightning.explain import list_explainers


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("name", list_explainers())
def test_contract(name, batch, model, make_explainer, make_pairs):
    img_a, img_b = make_pairs(batch)
    with make_explainer(name, model, batch_size=8) as explainer:
        out = explainer(img_a, img_b)
    assert out.method == name and out.seconds > 0
    assert out.score.shape == (batch,) and torch.isfinite(out.score).all()
    for m in (out.sim_a, out.dis_a, out.sim_b, out.dis_b, out.raw_a, out.raw_b):
        assert m.shape == (batch, 112, 112) and torch.isfinite(m).all() and not m.requires_grad
    for m in (out.sim_a, out.dis_a, out.sim_b, out.dis_b):
        assert m.min() >= 0 and m.max() <= 1
        assert all(abs(peak - 1) < 1e-6 or peak == 0 for peak in m.amax(dim=(1, 2)).tolist())


def test_bad_input_is_reported(model, make_explainer, make_pairs):
    img_a, img_b = make_pairs(2)
    explainer = make_explainer("random", model)
    with pytest.raises(DataFormatError, match="same shape"):
        explainer(img_a, img_b[:1])
    with pytest.raises(DataFormatError, match=r"\(B, 3, H, W\)"):
        explainer(img_a[:, 0], img_b[:, 0])


@pytest.mark.parametrize("name", list_explainers())
def test_every_method_under_inference_mode(name, model, make_explainer, make_pairs):
    """Lightning validation runs under inference_mode; images made there are inference tensors."""
    with torch.inference_mode():
        img_a, img_b = (img.clone() for img in make_pairs(2))
        with make_explainer(name, model) as explainer:
            out = explainer(img_a, img_b)
    assert torch.isfinite(out.raw_a).all() and out.sim_b.shape == (2, 112, 112)


@pytest.mark.parametrize("name", ["corrrise", "xssab", "gradcam"])
def test_speed_flags(name, model, make_explainer, make_pairs):
    img_a, img_b = make_pairs(2)
    with make_explainer(name, model) as plain, make_explainer(name, model, bf16=True, channels_last=True) as fast:
        want, got = plain(img_a, img_b), fast(img_a, img_b)
    assert got.score.dtype == torch.float32
    torch.testing.assert_close(got.score, want.score, atol=0.05, rtol=0)
    assert torch.isfinite(got.raw_a).all() and got.sim_a.shape == want.sim_a.shape


@pytest.mark.parametrize("name", [n for n in list_explainers() if n not in ("xcos", "random")])
def test_sides_a_explains_image_a_alone(name, model, make_explainer, make_pairs):
    """``sides="a"``: the same maps of A as a full call, all-zero maps of B."""
    img_a, img_b = make_pairs(2)
    with make_explainer(name, model) as both, make_explainer(name, model, sides="a") as only_a:
        want, got = both(img_a, img_b), only_a(img_a, img_b)
    torch.testing.assert_close(got.raw_a, want.raw_a)
    assert not got.sim_b.any() and not got.dis_b.any() and not got.raw_b.any()
    with pytest.raises(ValueError, match="sides"):
        make_explainer(name, model, sides="b")


def test_random_map_at_a_coarser_resolution_is_smooth(model, make_explainer, make_pairs):
    img_a, img_b = make_pairs(2)
    pixel = make_explainer("random", model)(img_a, img_b).raw_a
    smooth = make_explainer("random", model, cells=4)(img_a, img_b).raw_a
    assert smooth.shape == pixel.shape == (2, 112, 112) and smooth.abs().max() <= 1
    step = lambda m: (m[:, 1:] - m[:, :-1]).abs().mean()  # noqa: E731 (mean jump between neighbouring rows)
    assert step(smooth) < step(pixel) / 10
    again = make_explainer("random", model, cells=4)(img_a, img_b).raw_a
    assert torch.equal(smooth, again)  # seeded
    with pytest.raises(ValueError, match="cells"):
        make_explainer("random", model, cells=-1)
