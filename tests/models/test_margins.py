import math

import pytest
import torch
import torch.nn.functional as F

from xcos_lightning.models.margins import ArcFace, CosFace, MarginHead, margin_target


def _head_with_unit_centres(head: MarginHead) -> MarginHead:
    with torch.no_grad():
        head.weight.copy_(torch.eye(head.num_classes, head.weight.shape[1]))
    return head


def test_arcface_closed_form():
    head = _head_with_unit_centres(ArcFace(4, 3, s=10.0, m=0.3))
    angle = 0.7
    emb = torch.tensor([[math.cos(angle), math.sin(angle), 0.0, 0.0]])
    logits = head(emb, torch.tensor([0]))
    assert logits[0, 0].item() == pytest.approx(10 * math.cos(angle + 0.3), abs=1e-5)
    assert logits[0, 1].item() == pytest.approx(10 * math.sin(angle), abs=1e-5)
    assert logits[0, 2].item() == pytest.approx(0.0, abs=1e-6)


def test_cosface_closed_form():
    head = _head_with_unit_centres(CosFace(4, 3, s=30.0, m=0.35))
    emb = torch.tensor([[0.6, 0.8, 0.0, 0.0]])
    logits = head(emb, torch.tensor([1]))
    assert logits[0, 1].item() == pytest.approx(30 * (0.8 - 0.35), abs=1e-5)
    assert logits[0, 0].item() == pytest.approx(30 * 0.6, abs=1e-5)


def test_combined_form_matches_sphereface_style_margin():
    cos = torch.tensor([0.5])
    theta = math.acos(0.5)
    got = margin_target(cos, m1=1.2, m2=0.1, m3=0.05)
    assert got.item() == pytest.approx(math.cos(1.2 * theta + 0.1) - 0.05, abs=1e-6)


def test_theta_plus_margin_beyond_pi_stays_monotone():
    cos = torch.linspace(-1, 1, 2001)
    target = margin_target(cos, 1.0, 0.5, 0.0)
    # A better angle (larger cos) must never give a smaller target logit.
    assert torch.all(target[1:] - target[:-1] >= -1e-6)
    assert target[0].item() == pytest.approx(-1 - 0.5 * math.sin(0.5), abs=1e-4)


@pytest.mark.parametrize("value", [1.0, -1.0, 0.9999999])
def test_finite_gradient_at_cos_plus_minus_one(value):
    cos = torch.tensor([value], requires_grad=True)
    margin_target(cos, 1.0, 0.5, 0.0).sum().backward()
    assert torch.isfinite(cos.grad).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_finite_under_autocast(dtype):
    head = ArcFace(8, 5)
    emb = torch.randn(6, 8, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    with torch.no_grad():  # make one embedding coincide with its centre: cos = 1 exactly
        emb[0] = head.weight[0] * 3
    with torch.autocast("cpu", dtype=dtype):
        logits = head(emb, labels)
        loss = F.cross_entropy(logits, labels)
    loss.backward()
    assert logits.dtype == torch.float32
    assert torch.isfinite(loss) and torch.isfinite(emb.grad).all() and torch.isfinite(head.weight.grad).all()


def test_label_outside_num_classes_is_a_clear_error():
    head = ArcFace(8, 5)
    with pytest.raises(ValueError, match="num_classes"):
        head(torch.randn(2, 8), torch.tensor([1, 7]))
