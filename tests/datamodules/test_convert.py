"""Converter end to end: real identity folders -> .rec, LFW pairs -> .bin, all written under tmp_path."""
from __future__ import annotations

import numpy as np
import pytest

from xcos_lightning.cli.convert import main
from xcos_lightning.datamodules.image_folder import IdentityFolderDataset
from xcos_lightning.datamodules.pairs_file import read_pairs_file
from xcos_lightning.datamodules.recordio_dataset import RecordIODataset
from xcos_lightning.datamodules.verification_bin import load_bin


def test_folders_to_rec(shared_dir, tmp_path, capsys):
    root = shared_dir / "data" / "kz_celeb25" / "testing"
    assert main(["rec", str(root), str(tmp_path / "test.rec")]) == 0
    assert "217 images, 25 identities" in capsys.readouterr().out
    packed, folders = RecordIODataset(tmp_path / "test.rec"), IdentityFolderDataset(root)
    assert packed.reader.image_keys == list(range(1, 218)) and packed.num_classes == 25
    assert (packed.labels == folders.labels).all()
    assert packed.reader.read_record(5)[1] == folders.paths[4].read_bytes()  # aligned JPEGs stored byte for byte


def test_folders_to_rec_with_crop(shared_dir, tmp_path):
    orl = shared_dir / "data" / "orl"
    assert main(["rec", str(orl), str(tmp_path / "orl.rec"), "--size", "32", "--crop", "90"]) == 0
    packed = RecordIODataset(tmp_path / "orl.rec", size=32)
    assert len(packed) == 400 and packed.num_classes == 40
    assert (tmp_path / "property").read_text().strip() == "40,32,32"
    assert packed.reader.read_image(1).shape == (32, 32, 3)


def test_lfw_pairs_to_bin(shared_dir, tmp_path):
    lfw = shared_dir / "data" / "lfw"
    lines = (lfw / "pairs.txt").read_text().splitlines()
    subset = tmp_path / "pairs.txt"
    subset.write_text("\n".join(lines[1:4] + lines[301:304]) + "\n")  # 3 matched + 3 mismatched of fold 1
    out = tmp_path / "lfw6.bin"
    assert main(["bin", f"pairs:{lfw}:{subset}", str(out), "--crop", "120", "--format", "PNG"]) == 0
    loaded, source = load_bin(out), read_pairs_file(subset, lfw, crop=120)
    assert loaded.labels.tolist() == [True] * 3 + [False] * 3
    assert all(np.array_equal(loaded.load_image(j), source.load_image(j)) for j in range(12))


def test_bad_input_exits_with_message(shared_dir, tmp_path, capsys):
    broken = shared_dir / "data" / "kz_celeb25" / "validation" / "validation.bin"
    assert main(["bin", str(broken), str(tmp_path / "x.bin")]) == 2  # bad input
    assert "all 749 pairs are marked genuine" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["rec"])
