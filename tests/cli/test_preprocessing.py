"""One preprocessing rule in every command: the same non-square photo through the face preprocessing of
``verify``, ``compare``, ``benchmark`` (their options parsed by ``explain.py``'s parser), ``pair`` and
``convert rec`` / ``convert bin`` (files written and read back) gives the same face, and that face is the
oracle's: PIL's centred crop of the face's aspect, then a bilinear resize; never the whole photo stretched."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from torch import nn

from xcos_lightning.cli import benchmark, compare, convert, verify
from xcos_lightning.cli.explain import build_parser
from xcos_lightning.cli.face_args import face_size, make_aligner
from xcos_lightning.cli.pair import load_photo
from xcos_lightning.datamodules.pair_set import PairSet
from xcos_lightning.datamodules.recordio_dataset import RecordIODataset
from xcos_lightning.datamodules.verification_bin import load_bin

SIZE = 64


def _photo(path, width: int, height: int, seed: int):
    """A lossless photo whose every region differs (smooth noise), so a wrong crop changes the face."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 10 + 1, width // 10 + 1, 3), dtype=np.uint8)
    Image.fromarray(coarse).resize((width, height), Image.BILINEAR).save(path)
    return path


def _oracle(path, crop: int | None) -> np.ndarray:
    """Centred square of side ``crop`` (default the shorter side) resized to SIZE x SIZE, by PIL directly."""
    with Image.open(path) as img:
        side = crop or min(img.size)
        left, top = round(img.width / 2 - side / 2), round(img.height / 2 - side / 2)
        return np.asarray(img.convert("RGB").crop((left, top, left + side, top + side)).resize((SIZE, SIZE),
                                                                                          Image.BILINEAR))


class Captured(Exception):
    """Raised by the stand-in of the step after a command built its pair set; carries that set."""


def _capture(*args, **kwargs):
    pair_set = next(a for a in (*args, *kwargs.values()) if isinstance(a, (PairSet, dict)))
    raise Captured(next(iter(pair_set.values())) if isinstance(pair_set, dict) else pair_set)


@pytest.fixture
def photos(tmp_path):
    """A tall and a wide photo in two identity folders, and a pairs list over them (10 pairs: 10 folds)."""
    for name in ("Ann", "Bo"):
        (tmp_path / "faces" / name).mkdir(parents=True)
    tall, wide = _photo(tmp_path / "faces/Ann/tall.png", 150, 200, 0), _photo(tmp_path / "faces/Bo/wide.png", 200, 150, 1)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text(f"{tall} {wide} 1\n{wide} {tall} 0\n" * 5)
    return tall, wide, pairs


@pytest.mark.parametrize("crop", [None, 100])
def test_every_command_cuts_the_same_face(photos, tmp_path, monkeypatch, crop):
    tall, wide, pairs = photos
    spec, common = f"list:{pairs}", ["--size", str(SIZE), "--align", "none", *(["--crop", str(crop)] if crop else [])]
    # each command runs until its pair set is built; the step after it (scoring, explaining) is the stand-in
    for module in (verify, compare, benchmark):
        monkeypatch.setattr(module, "load_model", lambda spec: nn.Conv2d(3, 1, 1))
    monkeypatch.setattr(verify, "score_pair_set", _capture)
    monkeypatch.setattr(compare, "compare_model", _capture)
    monkeypatch.setattr(benchmark, "evaluate_pair_set", _capture)
    argv = {"verify": ["verify", "--model", "m", "--data", spec],
            "compare": ["compare", "m", "--data", spec, "--out", str(tmp_path / "o")],
            "benchmark": ["benchmark", "--model", "m", "--data", spec, "--methods", "random"]}
    faces = {}
    for command, words in argv.items():
        args = build_parser({command}).parse_args([*words, *common])
        with pytest.raises(Captured) as captured:
            args.func(args)
        faces[command] = [captured.value.args[0].load_image(j) for j in (0, 1)]
    args = build_parser({"pair"}).parse_args(["pair", str(tall), str(wide), "--model", "m", "--methods", "random",
                                              "--out", "o.png", *common])
    size = face_size(args)  # pair.run's size and load_photo's arguments (its figure needs a real model)
    faces["pair"] = [(load_photo(p, size, args.crop, make_aligner(args, size)).face.permute(1, 2, 0) * 255)
                     .round().byte().numpy() for p in (tall, wide)]
    options = ["--size", str(SIZE), "--format", "PNG", *(["--crop", str(crop)] if crop else [])]
    assert convert.main(["rec", str(tmp_path / "faces"), str(tmp_path / "f.rec"), *options]) == 0
    rec = RecordIODataset(tmp_path / "f.rec", size=SIZE)  # already SIZE x SIZE: read back unchanged
    faces["convert rec"] = [rec.load_image(i) for i in (0, 1)]  # identities sorted: Ann (tall), Bo (wide)
    assert convert.main(["bin", spec, str(tmp_path / "f.bin"), "--no-check", *options]) == 0
    faces["convert bin"] = [load_bin(tmp_path / "f.bin", size=SIZE, check=False).load_image(j) for j in (0, 1)]

    expected = [_oracle(p, crop) for p in (tall, wide)]
    with Image.open(tall) as img:  # the rule this replaces: the whole photo stretched (differs)
        assert np.abs(np.asarray(img.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)).astype(int)
                      - expected[0]).max() > 20
    for command, got in faces.items():
        for face, want in zip(got, expected):
            assert face.shape == (SIZE, SIZE, 3), command
            np.testing.assert_array_equal(face, want, err_msg=command)
