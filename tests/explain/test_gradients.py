"""Gradient explainers: Lightning's inference_mode path, hook release, no autograd leftovers, xSSAB split."""
import pytest
import torch

from xcos_lightning.explain import GradCAM, XSSAB


@pytest.mark.parametrize("name", ["xssab", "gradcam", "gradcampp"])
def test_works_under_inference_mode(name, model, make_explainer, make_pairs):
    img_a, img_b = make_pairs(2)
    with make_explainer(name, model) as explainer:
        expected = explainer(img_a, img_b)
        with torch.inference_mode():
            # Images made inside inference mode, as in a Lightning validation_step.
            inf_a, inf_b = img_a.clone(), img_b.clone()
            out = explainer(inf_a, inf_b)
            assert torch.is_inference_mode_enabled()
    for got, want in ((out.sim_a, expected.sim_a), (out.dis_b, expected.dis_b), (out.raw_a, expected.raw_a)):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("name", ["xssab", "gradcam", "gradcampp"])
def test_no_autograd_leftovers(name, model, make_explainer, make_pairs):
    img_a, img_b = make_pairs(2)
    with make_explainer(name, model) as explainer:
        out = explainer(img_a, img_b)
    assert all(p.grad is None for p in model.parameters())
    assert not img_a.requires_grad and not img_b.requires_grad
    assert all(t.grad_fn is None and not t.requires_grad for t in (out.raw_a, out.raw_b, out.sim_a, out.score))


def test_hooks_live_only_inside_with(model, make_pairs):
    img_a, img_b = make_pairs(1)
    layer = model.features
    with GradCAM(model, target_layer=layer) as cam:
        assert len(layer._forward_hooks) == 1
        cam(img_a, img_b)
        with torch.no_grad():
            model(img_a)
        assert cam._activation is None  # other forwards of the model are not recorded
    assert len(layer._forward_hooks) == 0
    assert all(len(m._forward_hooks) == 0 and len(m._backward_hooks) == 0 for m in model.modules())
    cam(img_a, img_b)  # a released explainer hooks itself again when used...
    cam.release()  # ...and lets go again
    assert len(layer._forward_hooks) == 0


def test_wrong_target_layer_is_reported(model, make_pairs):
    img_a, img_b = make_pairs(1)
    with GradCAM(model, target_layer=torch.nn.Conv2d(3, 3, 1)) as cam, pytest.raises(RuntimeError, match="target_layer"):
        cam(img_a, img_b)


def test_xssab_threshold_splits_arguments(model, make_pairs):
    img_a, img_b = make_pairs(2)
    all_positive = XSSAB(model, threshold=-1e6)(img_a, img_b)
    assert all_positive.sim_a.amax() == 1 and all_positive.dis_a.amax() == 0 and all_positive.dis_b.amax() == 0
    all_negative = XSSAB(model, threshold=1e6)(img_a, img_b)
    assert all_negative.sim_a.amax() == 0 and all_negative.dis_a.amax() == 1
    split = XSSAB(model, threshold=0.0)(img_a, img_b)
    assert split.sim_a.amax() == 1 and split.dis_a.amax() == 1


def test_xssab_blur_smooths(model, make_pairs):
    img_a, img_b = make_pairs(1)

    def roughness(m: torch.Tensor) -> float:
        return (m[:, 1:] - m[:, :-1]).abs().mean().item()

    sharp, blurred = XSSAB(model)(img_a, img_b), XSSAB(model, blur=True)(img_a, img_b)
    assert blurred.raw_a.shape == sharp.raw_a.shape
    assert roughness(blurred.raw_a) < roughness(sharp.raw_a)
