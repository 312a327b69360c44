"""``explain.py pair`` end to end: odd image files in, printed decision, a PNG figure and a JSON last line."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from xcos_lightning.cli.explain import main
from xcos_lightning.cli.pair import load_photo


@pytest.fixture
def images(tmp_path):
    """A small grayscale JPEG and a non-square RGB PNG of smooth random content."""
    rng = np.random.default_rng(0)
    gray = np.kron(rng.integers(0, 256, (8, 8)), np.ones((8, 8))).astype(np.uint8)  # 64 x 64
    rgb = np.kron(rng.integers(0, 256, (6, 9, 3)), np.ones((8, 8, 1))).astype(np.uint8)  # 48 x 72
    path_a, path_b = tmp_path / "a.jpg", tmp_path / "b.png"
    Image.fromarray(gray, mode="L").save(path_a)
    Image.fromarray(rgb).save(path_b)
    return path_a, path_b


def _run(capsys, *argv) -> tuple[int, list[str], str]:
    """``explain.py pair`` on images without faces: ``--align none`` unless the test asks for a detector."""
    argv = [*map(str, argv)]
    code = main(["pair", *argv, *([] if "--align" in argv else ["--align", "none"])])
    captured = capsys.readouterr()
    return code, captured.out.strip().splitlines(), captured.err


def _assert_png(path, min_size):
    with Image.open(path) as fig:
        fig.verify()
    with Image.open(path) as fig:
        assert fig.format == "PNG" and fig.width >= min_size[0] and fig.height >= min_size[1]


def test_pair_pretrained_mobilefacenet(shared_dir, images, tmp_path, capsys):
    out = tmp_path / "figs" / "pair.png"
    spec = f"mobilefacenet:{shared_dir / 'weights/mobilefacenet_128d.pt'}"
    code, lines, _ = _run(capsys, *images, "--model", spec, "--methods", "random,corrrise,xssab,gradcam",
                          "--n-masks", "16", "--threshold", "0.3", "--out", out, "--json")
    assert code == 0
    result = json.loads(lines[-1])
    assert -1 <= result["score"] <= 1 and result["threshold"] == 0.3 and result["xcos_score"] is None
    assert result["decision"] == ("same person" if result["score"] > 0.3 else "different persons")
    assert list(result["methods"]) == ["random", "corrrise", "xssab", "gradcam"]
    assert all(t["seconds"] > 0 and abs(t["score"] - result["score"]) < 1e-4 for t in result["methods"].values())
    assert any(line.startswith("decision: ") for line in lines) and f"figure: {out}" in lines
    _assert_png(out, (4 * 224, 5 * 224))  # the faces, then 4 method rows of 4 panels of 224 px


def test_pair_xcos_checkpoint_adds_grids(images, xcos_ckpt, tmp_path, capsys):
    out = tmp_path / "xcos.png"
    code, lines, _ = _run(capsys, *images, "--model", xcos_ckpt, "--methods", "xcos,gradcam", "--out", out,
                          "--crop", "40", "--json")
    assert code == 0
    result = json.loads(lines[-1])
    assert result["threshold"] is None and result["same"] is None and -1 <= result["xcos_score"] <= 1
    assert result["same_xcos"] is None
    _assert_png(out, (4 * 224, 3 * 224))  # faces + S + W, then 2 method rows

    code, lines, _ = _run(capsys, *images, "--model", xcos_ckpt, "--methods", "xcos", "--out", out,
                          "--threshold", "0.3", "--xcos-threshold", "-1", "--json")
    result = json.loads(lines[-1])
    assert code == 0 and result["xcos_threshold"] == -1 and result["same_xcos"] is True
    assert "; xCos decision: same person" in next(line for line in lines if line.startswith("decision: "))


def test_load_photo_high_depth_grayscale_and_exif_rotation(tmp_path):
    """16-bit grayscale keeps its contrast (PIL's own RGB conversion would clip it to white) and a camera
    photo's EXIF orientation is applied before the centre crop."""
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    face = load_photo(tmp_path / "g16.png", (112, 112), None).face
    assert face.shape == (3, 112, 112) and torch.equal(face[0], face[2])
    assert face.min() < 0.05 and face.max() > 0.95 and abs(float(face.mean()) - 0.5) < 0.05
    wide = np.zeros((40, 80, 3), np.uint8)
    wide[:, :40] = 255  # left half white; rotated by the EXIF tag 6 (90 degrees clockwise) it is the top
    exif = Image.new("RGB", (1, 1)).getexif()
    exif[0x0112] = 6
    Image.fromarray(wide).save(tmp_path / "rot.jpg", exif=exif)
    face = load_photo(tmp_path / "rot.jpg", (112, 112), None).face
    assert face[:, :40].mean() > 0.9 and face[:, -40:].mean() < 0.1


def test_pair_reports_bad_input(images, xcos_ckpt, tmp_path, capsys):
    out = ("--out", tmp_path / "x.png")
    code, _, err = _run(capsys, *images, "--model", "mobilefacenet:/nonexistent.pt", "--methods", "random", *out)
    assert code == 2 and "does not exist" in err
    code, _, err = _run(capsys, *images, "--model", xcos_ckpt, "--methods", "random,nope", *out)
    assert code == 2 and "unknown or missing methods ['nope']" in err
    code, _, err = _run(capsys, images[0], tmp_path / "missing.jpg", "--model", xcos_ckpt, "--methods", "random", *out)
    assert code == 2 and "missing.jpg" in err
    code, _, err = _run(capsys, *images, "--model", xcos_ckpt, "--methods", "random", "--crop", "500", *out)
    assert code == 2 and "crop 500" in err
    assert not (tmp_path / "x.png").exists()


def _holiday_photo(face_path, at, scale, canvas=(600, 800), seed=0):
    """An LFW photo pasted small and off-centre into a larger, busy canvas (a snapshot stand-in)."""
    rng = np.random.default_rng(seed)
    h, w = canvas
    img = Image.fromarray(np.kron(rng.integers(60, 200, (h // 50, w // 50, 3)), np.ones((50, 50, 1))).astype(np.uint8))
    with Image.open(face_path) as face:
        img.paste(face.convert("RGB").resize((round(250 * scale), round(250 * scale))), at)
    return img


@pytest.fixture
def lfw_pair(shared_dir):
    root = shared_dir / "data/lfw/Aaron_Peirsol"
    return root / "Aaron_Peirsol_0001.jpg", root / "Aaron_Peirsol_0002.jpg"


def test_pair_finds_small_off_centre_faces_and_decides_as_on_the_lfw_photos(shared_dir, lfw_pair, tmp_path, capsys):
    """Faces of 125-150 px in 600 x 800 snapshots: found, aligned, same decision and nearly the same cosine as
    the LFW photos themselves; the maps are also drawn back onto the snapshots."""
    spec = f"mobilefacenet:{shared_dir / 'weights/mobilefacenet_128d.pt'}"
    snaps = [tmp_path / "snap_a.jpg", tmp_path / "snap_b.png"]
    _holiday_photo(lfw_pair[0], (520, 60), 0.6).save(snaps[0])
    _holiday_photo(lfw_pair[1], (40, 300), 0.5, seed=1).save(snaps[1])
    common = ("--model", spec, "--methods", "random", "--threshold", "0.2339", "--align", "mtcnn", "--json")
    code, lines, _ = _run(capsys, *snaps, *common, "--out", tmp_path / "snap.png")
    assert code == 0
    snap = json.loads(lines[-1])
    code, lines, _ = _run(capsys, *lfw_pair, *common, "--out", tmp_path / "lfw.png")
    assert code == 0
    lfw = json.loads(lines[-1])
    assert snap["decision"] == lfw["decision"] == "same person"
    assert abs(snap["score"] - lfw["score"]) < 0.1
    for photo, (x, y), scale in zip(snap["photos"], [(520, 60), (40, 300)], [0.6, 0.5]):
        assert photo["aligned"] and len(photo["faces"]) == 1 and photo["faces"][0]["score"] > 0.99
        x1, y1, x2, y2 = photo["faces"][0]["box"]
        assert x <= x1 < x2 <= x + 250 * scale and y <= y1 < y2 <= y + 250 * scale  # inside the pasted photo
        assert len(photo["faces"][0]["points"]) == 5
    assert snap["figures"] == [str(tmp_path / "snap.png"), str(tmp_path / "snap_photos.png")]
    with Image.open(tmp_path / "snap_photos.png") as fig:
        assert fig.width > 4 * 320 and fig.height > 2 * 240


def test_pair_photo_with_two_faces_and_photo_without_face(shared_dir, lfw_pair, tmp_path, capsys):
    spec = f"mobilefacenet:{shared_dir / 'weights/mobilefacenet_128d.pt'}"
    two = _holiday_photo(lfw_pair[0], (20, 150), 0.6)  # left, away from the centre
    with Image.open(lfw_pair[1]) as face:
        two.paste(face.convert("RGB").resize((150, 150)), (330, 230))  # the central face
    two.save(tmp_path / "two.jpg")
    common = ("--model", spec, "--methods", "random", "--align", "mtcnn", "--json", "--out", tmp_path / "f.png")
    code, lines, _ = _run(capsys, tmp_path / "two.jpg", lfw_pair[0], *common)
    assert code == 0
    photo = json.loads(lines[-1])["photos"][0]
    assert len(photo["faces"]) == 2 and photo["chosen"] == 1  # indices left to right: the central one is 1
    central = json.loads(lines[-1])["score"]
    code, lines, _ = _run(capsys, tmp_path / "two.jpg", lfw_pair[0], *common, "--face", "0")
    result = json.loads(lines[-1])
    assert code == 0 and result["photos"][0]["chosen"] == 0
    assert result["score"] > 0.95 > central  # face 0 is image 1 of the pair itself, the central one is image 2
    code, _, err = _run(capsys, tmp_path / "two.jpg", lfw_pair[0], *common, "--face", "2")
    assert code == 2 and "two.jpg: face 2 requested but 2 found" in err

    blank = Image.fromarray(np.full((300, 400, 3), 120, np.uint8))
    blank.save(tmp_path / "wall.png")
    code, _, err = _run(capsys, tmp_path / "wall.png", lfw_pair[0], *common)
    assert code == 2 and "wall.png: no face found" in err and "--on-miss crop" in err
    with pytest.warns(RuntimeWarning, match="wall.png: no face found; centre-cropped"):
        code, lines, _ = _run(capsys, tmp_path / "wall.png", lfw_pair[0], *common, "--on-miss", "crop")
    photo = json.loads(lines[-1])["photos"][0]
    assert code == 0 and photo["faces"] == [] and photo["aligned"] is False


def test_pair_warns_about_tiny_images(images, xcos_ckpt, tmp_path, capsys):
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(tmp_path / "tiny.png")
    with pytest.warns(RuntimeWarning, match="tiny.png: the face is upscaled 7.0x"):
        code, _, _ = _run(capsys, tmp_path / "tiny.png", images[1], "--model", xcos_ckpt, "--methods", "random",
                          "--out", tmp_path / "t.png")
    assert code == 0
