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


# (m1, m2, m3): ArcFace, CosFace, insightface's combined, SphereFace-style m1 = 4 (theta* = pi / 4), m1 < 1, m2
# past the point where insightface's own fallback would start above the branch.
MARGINS = [(1.0, 0.5, 0.0), (1.0, 0.0, 0.4), (1.0, 0.3, 0.2), (0.9, 0.4, 0.1), (1.35, 0.25, 0.1), (2.0, 0.3, 0.2),
           (4.0, 0.0, 0.0), (1.0, 2.5, 0.0)]


@pytest.mark.parametrize("m1, m2, m3", MARGINS)
def test_target_never_decreases_over_the_whole_cosine_range(m1, m2, m3):
    cos = torch.linspace(-1, 1, 40001, dtype=torch.float64)
    target = margin_target(cos, m1, m2, m3)
    # Brute force: every pair of grid points (cos_i < cos_j) in order, via the running maximum from the left.
    assert torch.all(target >= torch.cummax(target, 0).values - 1e-9)
    assert torch.isfinite(target).all()
    theta = torch.acos(cos)
    # Where the closed form applies it is the value (theta is kept 1e-6 inside (0, pi): not at |cos| = 1).
    inside = (m1 * theta + m2 <= math.pi - 1e-3) & (cos.abs() < 1 - 1e-5)
    torch.testing.assert_close(target[inside], torch.cos(m1 * theta[inside] + m2) - m3, atol=1e-5, rtol=0)


def test_sphereface_style_margin_no_longer_jumps_at_theta_star():
    # The reported bug: m1 = 4, the target logit fell from 0.707 to -1.0 as cos passed cos(pi / 4).
    below, above = margin_target(torch.tensor([0.7070, 0.7072], dtype=torch.float64), 4.0, 0.0, 0.0)
    assert above.item() == pytest.approx(-1.0, abs=2e-3) and below.item() <= above.item()


@pytest.mark.parametrize("m1, m2, m3", MARGINS)
def test_gradient_is_finite_and_not_negative_near_plus_minus_one(m1, m2, m3):
    values = [-1.0, -1 + 1e-7, -1 + 1e-4, -0.5, 0.0, 0.5, 1 - 1e-4, 1 - 1e-7, 1.0]
    cos = torch.tensor(values, requires_grad=True)
    margin_target(cos, m1, m2, m3).sum().backward()
    assert torch.isfinite(cos.grad).all() and (cos.grad >= 0).all(), cos.grad
