"""Similarity alignment: the least-squares fit against scikit-image's, templates, and both warps."""
import numpy as np
import pytest
from skimage.transform import SimilarityTransform

from xcos_lightning.align import ARCFACE_TEMPLATE, apply, invert, similarity_matrix, template, warp_back, warp_face
from xcos_lightning.align.transform import scale_of


def _random_similarity(rng) -> np.ndarray:
    angle, scale = rng.uniform(-np.pi, np.pi), rng.uniform(0.3, 3.0)
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[scale * c, -scale * s, rng.uniform(-50, 50)], [scale * s, scale * c, rng.uniform(-50, 50)]])


@pytest.mark.parametrize("seed", range(5))
def test_exact_similarity_is_recovered(seed):
    rng = np.random.default_rng(seed)
    matrix = _random_similarity(rng)
    src = rng.uniform(0, 250, (5, 2))
    np.testing.assert_allclose(similarity_matrix(src, apply(matrix, src)), matrix, atol=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_least_squares_matches_scikit_image(seed):
    rng = np.random.default_rng(seed)
    src = rng.uniform(0, 250, (5, 2))
    dst = ARCFACE_TEMPLATE + rng.normal(0, 4, (5, 2))  # noisy: no exact solution, the least-squares one
    oracle = SimilarityTransform.from_estimate(src, dst)
    np.testing.assert_allclose(similarity_matrix(src, dst), oracle.params[:2], atol=1e-8)


def test_batched_matrices_equal_one_at_a_time():
    rng = np.random.default_rng(7)
    src = rng.uniform(0, 250, (6, 5, 2))
    src[3] = ARCFACE_TEMPLATE * [-1, 1]  # a mirrored face among them
    batched = similarity_matrix(src, ARCFACE_TEMPLATE)
    assert batched.shape == (6, 2, 3)
    for one, points in zip(batched, src):
        np.testing.assert_allclose(one, similarity_matrix(points, ARCFACE_TEMPLATE), atol=1e-12)
        np.testing.assert_allclose(one, SimilarityTransform.from_estimate(points, ARCFACE_TEMPLATE).params[:2],
                                   atol=1e-8)
    assert np.linalg.det(batched[3][:, :2]) > 0


def test_mirrored_points_give_a_rotation_not_a_reflection():
    src = ARCFACE_TEMPLATE * [-1, 1]  # a mirror image of the template
    matrix = similarity_matrix(src, ARCFACE_TEMPLATE)
    assert np.linalg.det(matrix[:, :2]) > 0


def test_templates():
    np.testing.assert_allclose(template((112, 112)), ARCFACE_TEMPLATE)
    np.testing.assert_allclose(template((112, 96)), ARCFACE_TEMPLATE - [8, 0])  # SphereFace-style crop
    np.testing.assert_allclose(template((224, 224)), 2 * ARCFACE_TEMPLATE)


def test_inverse_round_trip():
    rng = np.random.default_rng(1)
    matrix, points = _random_similarity(rng), rng.uniform(0, 250, (20, 2))
    np.testing.assert_allclose(apply(invert(matrix), apply(matrix, points)), points, atol=1e-9)
    assert scale_of(invert(matrix)) == pytest.approx(1 / scale_of(matrix))


def test_warp_face_puts_photo_points_where_the_matrix_says():
    """A bright dot at photo point p lands at matrix @ p in the aligned face."""
    photo = np.zeros((250, 250, 3), np.uint8)
    photo[120:123, 90:93] = 255  # centre (91, 121)
    matrix = np.array([[0.5, -0.1, 10.0], [0.1, 0.5, -20.0]])
    face = warp_face(photo, matrix, (112, 112))
    ys, xs = np.nonzero(face[..., 0] > 0)
    weights = face[ys, xs, 0].astype(float)
    found = [np.average(xs, weights=weights), np.average(ys, weights=weights)]
    np.testing.assert_allclose(found, apply(matrix, [[91, 121]])[0], atol=0.5)


def test_warp_back_round_trips_inside_the_face():
    """A smooth map on the aligned face, drawn onto the photo and aligned again, is unchanged inside."""
    yy, xx = np.mgrid[0:112, 0:112]
    face_map = np.sin(xx / 15.0) + np.cos(yy / 11.0)
    matrix = similarity_matrix(ARCFACE_TEMPLATE * 1.8 + [40, 30], ARCFACE_TEMPLATE)  # photo face 1.8x larger
    photo_map, inside = warp_back(face_map, matrix, (300, 280))
    assert inside.shape == (300, 280) and 0.5 * 1.8 ** 2 * 112 ** 2 < inside.sum() < 1.1 * 1.8 ** 2 * 112 ** 2
    assert np.all(photo_map[~inside] == 0)
    again = warp_face(photo_map[..., None].repeat(3, 2).astype(np.float32), matrix, (112, 112))[..., 0]
    np.testing.assert_allclose(again[4:-4, 4:-4], face_map[4:-4, 4:-4], atol=0.02)
