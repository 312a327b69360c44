"""IdentityFolderDataset on real folders (kz_celeb25 JPEG, ORL grayscale PGM) and broken ones."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from xcos_lightning.datamodules.image_folder import IdentityFolderDataset
from xcos_lightning.errors import DataFormatError


def test_kz_validation_folders(shared_dir):
    data = IdentityFolderDataset(shared_dir / "data" / "kz_celeb25" / "validation")  # .rec/.bin beside are ignored
    assert len(data) == 229 and data.num_classes == 25 and data.class_names[0] == "Aidana_Medenova"
    assert data.labels.dtype == np.int64 and set(data.labels.tolist()) == set(range(25))
    image, label = data[0]
    assert image.shape == (3, 112, 112) and image.dtype == torch.float32 and label == 0
    assert 0.0 <= image.min() and image.max() <= 1.0


def test_orl_grayscale_pgm(shared_dir):
    data = IdentityFolderDataset(shared_dir / "data" / "orl", size=64, crop=92)
    assert len(data) == 400 and data.num_classes == 40
    image = data.load_image(0)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()


def test_transform_runs_on_uint8_before_conversion(tmp_path, identity_tree):
    root = identity_tree(tmp_path, {"a": 1, "b": 2})
    seen = []

    def invert(image: np.ndarray) -> np.ndarray:
        seen.append((image.dtype, image.shape))
        return 255 - image

    plain, inverted = IdentityFolderDataset(root, size=8), IdentityFolderDataset(root, size=8, transform=invert)
    image, label = inverted[2]
    assert torch.allclose(image, 1.0 - plain[2][0]) and label == 1
    assert seen == [(np.uint8, (8, 8, 3))]


def test_empty_identity_folder(tmp_path, identity_tree):
    root = identity_tree(tmp_path, {"a": 1})
    (root / "empty_person").mkdir()
    with pytest.raises(DataFormatError, match=r"1 identity folders hold no images.*empty_person"):
        IdentityFolderDataset(root)


def test_non_image_file(tmp_path, identity_tree):
    root = identity_tree(tmp_path, {"a": 2})
    (root / "a" / "notes.txt").write_text("hello")
    (root / "a" / ".DS_Store").write_bytes(b"\0")  # hidden OS metadata is skipped, not an error
    with pytest.raises(DataFormatError, match=r"1 files in identity folders are not images.*notes\.txt"):
        IdentityFolderDataset(root)


def test_undecodable_image_and_bad_crop(tmp_path, identity_tree):
    root = identity_tree(tmp_path, {"a": 1})
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    data = IdentityFolderDataset(root)
    with pytest.raises(DataFormatError, match=r"broken\.jpg: cannot decode image"):
        data[1]
    with pytest.raises(DataFormatError, match=r"crop 40 px .* leaves the 16x16 image"):
        IdentityFolderDataset(root, crop=40)[0]
