"""Models declare their input size (H x W): a 112 x 96 flatten + FC model is probed at its size, found out when it
declares none, and every command crops or aligns faces to it."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from xcos_lightning.cli.explain import main
from xcos_lightning.datamodules.image_io import crop_box, prepare
from xcos_lightning.errors import ModelSpecError
from xcos_lightning.io.spec import input_size, load_model

USER_CODE = '''
import torch
from torch import nn


class Sphere(nn.Module):
    """A SphereFace-style 112 x 96 model: conv, flatten, FC (its embedding size follows the input size)."""

    def __init__(self, declare):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 8, stride=8)
        self.fc = nn.LazyLinear(16)
        self.fc(torch.zeros(1, 4 * 14 * 12))  # 112 x 96 -> 14 x 12 cells
        if declare:
            self.input_size = (112, 96)

    def forward(self, x):
        flat = self.conv(x).flatten(1)
        return self.fc(flat) if flat.shape[1] == self.fc.in_features else flat


def declared():
    return Sphere(True)


def undeclared():
    return Sphere(False)


def bad_size():
    model = Sphere(True)
    model.input_size = "112x96"
    return model
'''


@pytest.fixture
def user_models(tmp_path, monkeypatch):
    (tmp_path / "sphere_models.py").write_text(USER_CODE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_declared_size_is_probed_and_reported(user_models, shared_dir):
    assert input_size(load_model("sphere_models:declared")) == (112, 96)
    assert input_size(load_model(f"mobilefacenet:{shared_dir / 'weights/mobilefacenet_128d.pt'}")) == (112, 112)


def test_undeclared_size_dependent_model_is_an_error(user_models):
    with pytest.raises(ModelSpecError, match="784 dimensions at 112x112 but 16 at 112x96.*input_size = \\(H, W\\)"):
        load_model("sphere_models:undeclared")
    with pytest.raises(ModelSpecError, match="input_size must be \\(H, W\\) in pixels, got '112x96'"):
        load_model("sphere_models:bad_size")


def test_non_square_crop_keeps_the_face_aspect():
    img = Image.fromarray(np.arange(200 * 300 * 3, dtype=np.uint8).reshape(200, 300, 3))
    assert crop_box(img.size, (112, 96), 112) == (102, 44, 198, 156)  # 112 high, 96 wide, centred
    out = prepare(img, (112, 96), 112)
    assert out.shape == (112, 96, 3)
    np.testing.assert_array_equal(out, np.asarray(img)[44:156, 102:198])  # same size: no resampling
    assert prepare(img, 56, 112).shape == (56, 56, 3)


def test_pair_and_verify_follow_the_model_size(user_models, tmp_path, capsys, shared_dir):
    images = []
    for k in range(2):
        path = tmp_path / f"{k}.png"
        rng = np.random.default_rng(k)
        Image.fromarray(np.kron(rng.integers(0, 256, (10, 10, 3)), np.ones((20, 20, 1))).astype(np.uint8)).save(path)
        images.append(path)
    code = main(["pair", *map(str, images), "--model", "sphere_models:declared", "--methods", "random", "--align",
                 "none", "--out", str(tmp_path / "f.png"), "--json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["size"] == [112, 96]
    pairs = tmp_path / "pairs.txt"
    names = sorted(p.name for p in (shared_dir / "data/lfw").iterdir() if p.is_dir())
    people = [n for n in names if (shared_dir / "data/lfw" / n / f"{n}_0002.jpg").is_file()][:10]
    rows = [f"{n}\t1\t2" for n in people] + [f"{a}\t1\t{b}\t1" for a, b in zip(people, people[1:] + people[:1])]
    pairs.write_text("\n".join(rows) + "\n")
    code = main(["verify", "--model", "sphere_models:declared", "--data", f"pairs:{shared_dir / 'data/lfw'}:{pairs}",
                 "--crop", "120", "--align", "none"])
    out = capsys.readouterr().out
    assert code == 0 and "112x96 px faces" in out
