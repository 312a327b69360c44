"""Synthetic identities: determinism, image/mask contract, occluders, verification pairs, identity signal."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers.threads import one_torch_thread  # noqa: F401 (autouse fixture)
from xcos_lightning.datamodules.synthetic_faces import SyntheticFaces
from xcos_lightning.errors import DataFormatError, VerificationSetError


def _batch(data: SyntheticFaces, ids: list[int], imgs: list[int]):
    return data.render_batch(torch.tensor(ids), torch.tensor(imgs))


def test_same_seed_same_tensors_and_every_key_changes_the_image():
    a, b = (SyntheticFaces(10, seed=3, size=48, occluder_prob=0.5) for _ in range(2))
    img, mask = a.render(4, 7)
    img2, mask2 = b.render(4, 7)
    assert torch.equal(img, img2) and torch.equal(mask, mask2)
    others = [SyntheticFaces(10, seed=4, size=48).render(4, 7)[0], a.render(5, 7)[0], a.render(4, 8)[0]]
    for other in others:
        assert (other - img).abs().mean() > 0.02


def test_image_contract_shapes_dtype_range():
    for size in (112, 40):
        imgs, masks = _batch(SyntheticFaces(6, size=size, occluder_prob=0.5), [0, 1, 2, 3, 4, 5], [0] * 6)
        assert imgs.shape == (6, 3, size, size) and imgs.dtype == torch.float32
        assert masks.shape == (6, size, size) and masks.dtype == torch.bool
        assert imgs.min() >= 0 and imgs.max() <= 1 and imgs.std() > 0.05


def test_batch_render_equals_single_renders():
    data = SyntheticFaces(20, seed=1, size=40, occluder_prob=0.5)
    ids, nums = [3, 0, 19, 3, 7], [0, 11, 2, 5, 1000003]
    imgs, masks = _batch(data, ids, nums)
    for i, (k, j) in enumerate(zip(ids, nums)):
        img, mask = data.render(k, j)
        assert torch.allclose(imgs[i], img, atol=1e-5) and torch.equal(masks[i], mask)


def test_mask_nonempty_iff_occluder_and_only_masked_pixels_change():
    ids, nums = list(range(12)), [5] * 12
    clean, none = _batch(SyntheticFaces(12, seed=2, size=40), ids, nums)
    occluded, masks = _batch(SyntheticFaces(12, seed=2, size=40, occluder_prob=1.0), ids, nums)
    assert not none.any()
    assert all(m.any() for m in masks) and all(m.float().mean() < 0.5 for m in masks)
    outside = ~masks[:, None].expand_as(clean)
    assert torch.allclose(occluded[outside], clean[outside], atol=1e-5)
    half = SyntheticFaces(100, seed=2, size=12, occluder_prob=0.5)
    frac = _batch(half, list(range(100)), [0] * 100)[1].flatten(1).any(1).float().mean()
    assert 0.35 < frac < 0.65


def test_occlude_is_deterministic_and_touches_only_its_mask():
    data = SyntheticFaces(1, size=64)
    img = data.render(0, 0)[0]
    outs = [data.occlude(img, seed) for seed in range(8)]
    again, mask_again = data.occlude(img, 3)
    assert torch.equal(again, outs[3][0]) and torch.equal(mask_again, outs[3][1])
    for out, mask in outs:
        assert mask.shape == img.shape[1:] and mask.any()
        assert torch.equal(out[:, ~mask], img[:, ~mask])
    assert len({tuple(m.flatten().nonzero()[:3, 0].tolist()) for _, m in outs}) > 4
    with pytest.raises(DataFormatError):
        data.occlude(img[0], 0)


def test_verification_pairs_balanced_deterministic_and_never_reuse_an_image():
    data = SyntheticFaces(300)
    held_out = range(200, 300)
    pairs = data.verification_pairs(held_out, 400, seed=5)
    assert pairs == data.verification_pairs(held_out, 400, seed=5) != data.verification_pairs(held_out, 400, seed=6)
    assert len(pairs) == 400 and sum(p[4] for p in pairs) == 200
    for id_a, img_a, id_b, img_b, genuine in pairs:
        assert id_a in held_out and id_b in held_out
        assert (id_a == id_b) == genuine
        assert (id_a, img_a) != (id_b, img_b)
    with pytest.raises(VerificationSetError):
        data.verification_pairs(held_out, 3)
    with pytest.raises(VerificationSetError):
        data.verification_pairs([7], 2)
    with pytest.raises(DataFormatError):
        data.verification_pairs(range(250, 350), 2)


def test_bad_arguments_raise_package_errors():
    with pytest.raises(DataFormatError):
        SyntheticFaces(0)
    with pytest.raises(DataFormatError):
        SyntheticFaces(5, occluder_prob=1.5)
    with pytest.raises(DataFormatError):
        SyntheticFaces(5).render(5, 0)
    with pytest.raises(DataFormatError):
        SyntheticFaces(5).render(0, -1)


def test_jitter_zero_renders_the_canonical_face_and_identities_are_distinct():
    data = SyntheticFaces(30, jitter=0.0, size=24)
    canon, _ = _batch(data, list(range(30)), [0] * 30)
    assert torch.equal(canon[4], data.render(4, 99)[0])
    dist = torch.cdist(canon.flatten(1), canon.flatten(1)) / canon[0].numel() ** 0.5
    assert dist[~torch.eye(30, dtype=torch.bool)].min() > 0.05  # RMS pixel difference between any two ids


def test_same_identity_is_more_similar_than_different_identities():
    # Centred pixel cosine over many images: a weak verifier by design, but its means must still order.
    n_id, n_img = 16, 6
    data = SyntheticFaces(n_id, size=24)
    imgs, _ = _batch(data, [k for k in range(n_id) for _ in range(n_img)], list(range(n_img)) * n_id)
    x = F.normalize(imgs.flatten(1) - imgs.flatten(1).mean(1, keepdim=True), dim=1)
    sim = x @ x.T
    same = torch.block_diag(*[torch.ones(n_img, n_img)] * n_id).bool()
    genuine = sim[same & ~torch.eye(len(x), dtype=torch.bool)].mean()
    assert genuine > sim[~same].mean() + 0.1
