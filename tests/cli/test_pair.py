"""``explain.py pair`` end to end: odd image files in, printed decision, a PNG figure and a JSON last line."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from xcos_lightning.cli.explain import main
from xcos_lightning.cli.pair import load_face


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
    code = main(["pair", *map(str, argv)])
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


def test_load_face_high_depth_grayscale_and_exif_rotation(tmp_path):
    """16-bit grayscale keeps its contrast (PIL's own RGB conversion would clip it to white) and a camera
    photo's EXIF orientation is applied before the centre crop."""
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    face = load_face(tmp_path / "g16.png", 112, None)
    assert face.shape == (3, 112, 112) and torch.equal(face[0], face[2])
    assert face.min() < 0.05 and face.max() > 0.95 and abs(float(face.mean()) - 0.5) < 0.05
    wide = np.zeros((40, 80, 3), np.uint8)
    wide[:, :40] = 255  # left half white; rotated by the EXIF tag 6 (90 degrees clockwise) it is the top
    exif = Image.new("RGB", (1, 1)).getexif()
    exif[0x0112] = 6
    Image.fromarray(wide).save(tmp_path / "rot.jpg", exif=exif)
    face = load_face(tmp_path / "rot.jpg", 112, None)
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
