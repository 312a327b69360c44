"""CorrRISE: batched correlation equals a per-mask, per-pixel reference; masks are seeded and reused."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xcos_lightning.explain import CorrRISE, MaskSet


def average_ranks_reference(v: np.ndarray) -> np.ndarray:
    """Rank = number of smaller values + average position among equal ones (1-based)."""
    return (v[None, :] < v[:, None]).sum(1) + ((v[None, :] == v[:, None]).sum(1) + 1) / 2


def corrrise_reference(model, x, partner_img, masks, correlation):
    """One forward per mask, then one correlation per pixel (float64, numpy)."""
    with torch.no_grad():
        partner = model(partner_img[None])
        scores = np.array([F.cosine_similarity(model((x * m)[None]), partner).item() for m in masks])
    masks_np = masks.flatten(1).double().numpy()
    if correlation == "spearman":
        scores = average_ranks_reference(scores)
    out = np.zeros(masks_np.shape[1])
    for p in range(masks_np.shape[1]):
        values = masks_np[:, p]
        if values.std() == 0:
            continue  # never varied -> 0
        if correlation == "spearman":
            values = average_ranks_reference(values)
        out[p] = np.corrcoef(scores, values)[0, 1]
    return out.reshape(masks.shape[1:])


@pytest.mark.parametrize("recipe,correlation", [("paper", "pearson"), ("paper", "spearman"),
                                                ("transcription", "pearson"), ("transcription", "spearman")])
def test_batched_equals_per_mask_loop(recipe, correlation, model, make_pairs):
    # float64 model and images: the comparison tests batching and the correlation algebra, not fp32 noise.
    model = copy.deepcopy(model).double()
    img_a, img_b = (img.double() for img in make_pairs(2, size=24))
    explainer = CorrRISE(model, n_masks=24, recipe=recipe, correlation=correlation, patch_size=8, batch_size=7)
    out = explainer(img_a, img_b)
    masks = explainer.mask_set((24, 24), img_a.device).masks
    for i in range(2):
        ref_a = corrrise_reference(model, img_a[i], img_b[i], masks, correlation)
        ref_b = corrrise_reference(model, img_b[i], img_a[i], masks, correlation)
        np.testing.assert_allclose(out.raw_a[i].numpy(), ref_a, atol=1e-5)
        np.testing.assert_allclose(out.raw_b[i].numpy(), ref_b, atol=1e-5)


def test_mask_set_is_seeded_and_reused(model, make_pairs):
    img_a, img_b = make_pairs(1, size=32)
    explainer = CorrRISE(model, n_masks=8, patch_size=8, seed=3)
    first = explainer.mask_set((32, 32), img_a.device)
    torch.testing.assert_close(explainer(img_a, img_b).raw_a, explainer(img_a, img_b).raw_a, rtol=0, atol=0)
    assert explainer.mask_set((32, 32), img_a.device) is first
    assert torch.equal(first.masks, MaskSet.generate("corrrise_paper", 8, (32, 32), 3, patch_size=8).masks)
    with explainer:
        pass
    assert explainer.mask_set((32, 32), img_a.device) is not first  # released, then regenerated


def test_recipes():
    paper = MaskSet.generate("corrrise_paper", 64, (40, 40), 0, patch_size=10).masks
    black = MaskSet.generate("corrrise_transcription", 64, (40, 40), 0, patch_size=10).masks
    assert paper.min() >= 0 and paper.max() == 1 and ((paper > 0) & (paper < 1)).any()
    assert set(black.unique().tolist()) <= {0.0, 1.0}
    # 3 patches of 10x10 fully inside: 100..300 hidden pixels per mask (overlaps merge).
    hidden = (black == 0).flatten(1).sum(1)
    assert hidden.min() >= 100 and hidden.max() <= 300
    assert (paper[:, 0, :] < 1).any()  # paper patches may be clipped at the border
