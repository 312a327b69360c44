"""Grad-CAM and Grad-CAM++ maps of ``xcos_lightning.explain.gradcam`` against pytorch-grad-cam (``grad-cam`` on
PyPI) on the same model (the pretrained MobileFaceNet), layer (its default target layer) and target (the cosine
to the partner's fixed embedding, ``1 - cos`` for dissimilarity), on real LFW pairs.

pytorch-grad-cam returns each CAM ReLU'd, min-max scaled on the h x w grid, then resized (OpenCV bilinear);
ours is the ReLU'd CAM bilinearly upsampled and scaled to its peak. Bilinear upsampling commutes with affine
maps, so the two must agree up to a positive affine map per image.

Grad-CAM++ differs on purpose: pytorch-grad-cam adds eps = 1e-6 to the alpha denominator
``2 g^2 + sum(A) g^3``, and the gradients of a cosine at the 7 x 7 map are small (g^2 ~ 1e-8 here), so that
eps, not the gradients, sets the alphas. Ours is the paper's closed form (Chattopadhay et al. 2018, eq. 19:
no eps). The test checks both against one NumPy formula on the activations and gradients that
pytorch-grad-cam's own hooks captured: theirs is that formula with eps = 1e-6, ours with eps = 0.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pytorch_grad_cam import GradCAM as RefGradCAM
from pytorch_grad_cam import GradCAMPlusPlus as RefGradCAMPlusPlus

from xcos_lightning.datamodules.pairs_file import load_pair_set
from xcos_lightning.explain.gradcam import GradCAM, GradCAMPlusPlus, default_target_layer
from xcos_lightning.io.spec import load_model

PAIRS = [0, 1, 300, 301]  # LFW's first fold: two genuine pairs, two impostor pairs


class CosineTarget:
    """pytorch-grad-cam target: the cosine of one sample's embedding to a fixed partner (or 1 - cosine)."""

    def __init__(self, partner: torch.Tensor, similarity: bool) -> None:
        self.partner, self.similarity = partner, similarity

    def __call__(self, embedding: torch.Tensor) -> torch.Tensor:
        cos = F.cosine_similarity(embedding, self.partner, dim=0)
        return cos if self.similarity else 1 - cos


@pytest.fixture(scope="module")
def setup(shared_dir):
    model = load_model(f"mobilefacenet:{shared_dir / 'weights/mobilefacenet_128d.pt'}").eval()
    pair_set = load_pair_set(f"lfw:{shared_dir / 'data/lfw'}")
    items = [pair_set[i] for i in PAIRS]
    img_a, img_b = (torch.stack([item[k] for item in items]) for k in ("img_a", "img_b"))
    with torch.no_grad():
        partner = model(img_b)
    return model, default_target_layer(model), img_a, img_b, partner


def reference(cls, model, layer, img_a, partner, similarity: bool):
    """pytorch-grad-cam's maps (B, 112, 112) and the activations and gradients its hooks captured."""
    with cls(model=model, target_layers=[layer]) as cam:
        maps = cam(input_tensor=img_a.clone(), targets=[CosineTarget(p, similarity) for p in partner])
        activation = cam.activations_and_grads.activations[0].double().numpy()
        gradient = cam.activations_and_grads.gradients[0].double().numpy()
    return maps.astype(np.float64), activation, gradient


def affine_residual(ours: np.ndarray, theirs: np.ndarray) -> tuple[float, float]:
    """Least-squares ``theirs ~ slope * ours + offset``: (slope, max abs residual / max |theirs|)."""
    x = np.stack([ours.ravel(), np.ones(ours.size)], 1)
    coef, *_ = np.linalg.lstsq(x, theirs.ravel(), rcond=None)
    return float(coef[0]), float(np.abs(x @ coef - theirs.ravel()).max() / np.abs(theirs).max())


def upsample(cam: np.ndarray) -> np.ndarray:
    return F.interpolate(torch.from_numpy(cam)[:, None], size=(112, 112), mode="bilinear",
                         align_corners=False)[:, 0].numpy()


def grad_cam_pp(activation: np.ndarray, gradient: np.ndarray, eps: float) -> np.ndarray:
    """Grad-CAM++ (B, h, w), ReLU'd, written from the paper: alpha = g^2 / (2 g^2 + sum_ab A_ab g^3 [+ eps])."""
    g2, g3 = gradient ** 2, gradient ** 3
    denominator = 2 * g2 + activation.sum(axis=(2, 3), keepdims=True) * g3 + eps
    alpha = np.where((gradient != 0) & (denominator != 0), g2 / np.where(denominator != 0, denominator, 1), 0)
    weights = (alpha * np.maximum(gradient, 0)).sum(axis=(2, 3))
    return np.maximum((weights[:, :, None, None] * activation).sum(1), 0)


@pytest.mark.parametrize("similarity", [True, False], ids=["similarity", "dissimilarity"])
def test_gradcam_matches_pytorch_grad_cam(setup, similarity):
    model, layer, img_a, img_b, partner = setup
    out = GradCAM(model, target_layer=layer)(img_a, img_b)
    ours = (out.sim_a if similarity else out.dis_a).double().numpy()
    theirs, _, _ = reference(RefGradCAM, model, layer, img_a, partner, similarity)
    for i in range(len(PAIRS)):
        slope, residual = affine_residual(ours[i], theirs[i])
        assert slope > 0 and residual < 1e-3, (i, slope, residual)


@pytest.mark.parametrize("similarity", [True, False], ids=["similarity", "dissimilarity"])
def test_gradcam_plus_plus_is_the_papers_form_of_pytorch_grad_cams(setup, similarity):
    model, layer, img_a, img_b, partner = setup
    out = GradCAMPlusPlus(model, target_layer=layer)(img_a, img_b)
    ours = (out.sim_a if similarity else out.dis_a).double().numpy()
    theirs, activation, gradient = reference(RefGradCAMPlusPlus, model, layer, img_a, partner, similarity)
    # The captured gradients are those of the target: small enough for eps = 1e-6 to matter.
    assert np.median(gradient ** 2) < 1e-6
    with_eps, paper = upsample(grad_cam_pp(activation, gradient, 1e-6)), upsample(grad_cam_pp(activation, gradient, 0))
    for i in range(len(PAIRS)):
        slope, residual = affine_residual(with_eps[i], theirs[i])
        assert slope > 0 and residual < 1e-4, ("pytorch-grad-cam is the formula with its eps", i, residual)
        slope, residual = affine_residual(paper[i], ours[i])
        assert slope > 0 and residual < 1e-4, ("ours is the formula without eps", i, residual)
        # Still the same method: the two maps rank the face's regions nearly alike.
        assert np.corrcoef(ours[i].ravel(), theirs[i].ravel())[0, 1] > 0.9
