"""MTCNN on real LFW photos: batched = one by one, the warp sends the detected points where the fitted matrix
says (and the fit is scikit-image's least-squares one), face choice, and the no-face error."""
import numpy as np
import pytest
from PIL import Image
from skimage.transform import SimilarityTransform

from xcos_lightning.align import FaceAligner, NoFaceError, apply, create_detector, template, warp_face
from xcos_lightning.errors import DataFormatError


@pytest.fixture(scope="module")
def photos(shared_dir):
    paths = sorted((shared_dir / "data/lfw").glob("*/*.jpg"))[::1700][:8]
    return paths, [np.asarray(Image.open(p).convert("RGB")) for p in paths]


@pytest.fixture(scope="module")
def mtcnn_faces(photos):
    return FaceAligner("mtcnn", cache=False, batch_size=8).detector(photos[1])


def test_batched_detection_equals_one_by_one(photos, mtcnn_faces):
    one_by_one = FaceAligner("mtcnn", cache=False, batch_size=1).detector(photos[1])
    assert [len(f) for f in one_by_one] == [len(f) for f in mtcnn_faces]
    for batched, single in zip(mtcnn_faces, one_by_one):
        for a, b in zip(batched, single):
            np.testing.assert_allclose(a.points, b.points, atol=1e-3)
            np.testing.assert_allclose(a.box, b.box, atol=1e-3)
            assert a.score == pytest.approx(b.score, abs=1e-5)


def test_every_lfw_photo_has_a_face_with_plausible_landmarks(photos, mtcnn_faces):
    aligner = FaceAligner("mtcnn", cache=False)
    for path, photo, faces in zip(*photos, mtcnn_faces):
        face = faces[aligner.choose(faces, photo.shape, str(path)).chosen]
        assert face.score > 0.95
        left_eye, right_eye, nose, left_mouth, right_mouth = face.points
        assert left_eye[0] < nose[0] < right_eye[0] and left_mouth[0] < right_mouth[0]
        assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])
        # deep-funneled LFW: the face sits near the centre of the 250 x 250 photo
        assert np.linalg.norm(face.points.mean(0) - 125) < 30


def test_warp_sends_detected_points_onto_the_template(photos, mtcnn_faces):
    """Warping a map of photo coordinates reads, at each aligned landmark, the detected landmark (< 1 px); the
    aligned landmarks sit at the template up to the least-squares residual of the five points (scikit-image's
    fit is the oracle for the matrix: a face is not the template's exact shape)."""
    aligner = FaceAligner("mtcnn", cache=False)
    yy, xx = np.mgrid[0:250, 0:250].astype(np.float32)
    coords = np.stack([xx, yy, np.zeros_like(xx)], -1)
    for photo, faces in zip(photos[1], mtcnn_faces):
        face = faces[aligner.choose(faces, photo.shape, "x").chosen]
        matrix = aligner.matrix(face)
        np.testing.assert_allclose(matrix, SimilarityTransform.from_estimate(face.points, template((112, 112))).params[:2],
                                   atol=1e-6)
        warped = warp_face(coords, matrix, (112, 112))
        aligned = apply(matrix, face.points)
        for (x, y), original in zip(aligned, face.points):
            x0, y0 = int(x), int(y)  # bilinear read of the warped coordinate map at the aligned point
            fx, fy = x - x0, y - y0
            patch = warped[y0:y0 + 2, x0:x0 + 2, :2]
            read = (patch[0, 0] * (1 - fx) * (1 - fy) + patch[0, 1] * fx * (1 - fy)
                    + patch[1, 0] * (1 - fx) * fy + patch[1, 1] * fx * fy)
            assert np.linalg.norm(read - original) < 1.0
        assert np.linalg.norm(aligned - template((112, 112)), axis=1).mean() < 6.0


def test_face_choice(photos, mtcnn_faces):
    """Several faces: the most central by default, the K-th from the left on request, an error past the last."""
    path, photo, faces = next((p, im, f) for p, im, f in zip(*photos, mtcnn_faces) if len(f) > 1) \
        if any(len(f) > 1 for f in mtcnn_faces) else (None, None, None)
    if faces is None:  # synthesise two faces: the same face pasted left and right on a wide canvas
        photo = np.zeros((250, 600, 3), np.uint8)
        photo[:, :250], photo[:, 350:] = photos[1][0], photos[1][0]
        path, faces = "wide.png", FaceAligner("mtcnn", cache=False).detector([photo])[0]
    assert len(faces) >= 2
    centres = [(f.box[0] + f.box[2]) / 2 for f in faces]
    assert centres == sorted(centres)  # indices read left to right
    central = FaceAligner("mtcnn", cache=False).choose(faces, photo.shape, str(path))
    distance = [np.hypot((f.box[0] + f.box[2]) / 2 - photo.shape[1] / 2, (f.box[1] + f.box[3]) / 2 - photo.shape[0] / 2)
                for f in faces]
    assert central.chosen == int(np.argmin(distance))
    assert FaceAligner("mtcnn", cache=False, face=1).choose(faces, photo.shape, str(path)).chosen == 1
    with pytest.raises(NoFaceError, match=f"face {len(faces)} requested but {len(faces)} found"):
        FaceAligner("mtcnn", cache=False, face=len(faces)).choose(faces, photo.shape, str(path))


def test_no_face_is_an_error_naming_the_photo_or_a_counted_fallback():
    blank = np.full((200, 200, 3), 128, np.uint8)
    aligner = FaceAligner("mtcnn", cache=False)
    faces = aligner.detector([blank])[0]
    assert faces == []
    with pytest.raises(NoFaceError, match="holiday.jpg: no face found"):
        aligner.choose(faces, blank.shape, "holiday.jpg")
    assert FaceAligner("mtcnn", cache=False, on_miss="crop").choose(faces, blank.shape, "x").chosen is None


def test_dlib_detector_agrees_with_mtcnn(photos, mtcnn_faces):
    """The second detector finds the same faces; its five points (from 68) lie within a few px of MTCNN's."""
    dlib_faces = create_detector("dlib")(photos[1])
    aligner = FaceAligner("mtcnn", cache=False)
    for photo, a, b in zip(photos[1], mtcnn_faces, dlib_faces):
        assert b, "dlib missed a face MTCNN found"
        fa = a[aligner.choose(a, photo.shape, "x").chosen]
        fb = b[aligner.choose(b, photo.shape, "x").chosen]
        assert np.linalg.norm(fa.points - fb.points, axis=1).mean() < 6.0


def test_user_detector_spec(tmp_path, monkeypatch):
    (tmp_path / "my_detector.py").write_text(
        "import numpy as np\n"
        "def detect(image):\n"
        "    pts = np.array([[38.3, 51.7], [73.5, 51.5], [56.0, 71.7], [41.5, 92.4], [70.7, 92.2]])\n"
        "    return np.array([[20, 20, 90, 100]]), pts[None], np.array([0.9])\n"
        "def broken(image):\n"
        "    return np.zeros((1, 4)), np.zeros((1, 3, 2))\n")
    monkeypatch.chdir(tmp_path)
    aligner = FaceAligner("my_detector:detect", cache=False)
    photo = np.zeros((112, 112, 3), np.uint8)
    face = aligner.detector([photo])[0][0]
    np.testing.assert_allclose(aligner.matrix(face)[:, :2], np.eye(2), atol=0.01)
    assert aligner.key == "my_detector:detect"
    with pytest.raises(DataFormatError, match="points \\(K, 5, 2\\)"):
        create_detector("my_detector:broken")([photo])
    with pytest.raises(DataFormatError, match="unknown face detector 'nope'"):
        create_detector("nope")
