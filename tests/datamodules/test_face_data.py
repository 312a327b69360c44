"""FaceDataModule on tiny identity folders, a tiny MS1M-style .rec, tiny .bin val sets and real kz_celeb25."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from xcos_lightning.datamodules import AlternatingOrder, FaceDataModule
from xcos_lightning.datamodules import transforms
from xcos_lightning.datamodules.pair_set import PairSet
from xcos_lightning.datamodules.recordio import RecordIOWriter
from xcos_lightning.errors import DataFormatError, VerificationSetError

SIZE = 32  # small faces keep the tests fast; the module resizes whatever it reads to ``size``


def write_rec(path: Path, labels: list[int], image_bytes, num_classes: int | None) -> Path:
    """MS1M layout: header record 0 (label [N+1, N+1]), images at keys 1..N, ``property`` beside the .rec."""
    with RecordIOWriter(path) as writer:
        writer.write_header_record(len(labels))
        for key, label in enumerate(labels, 1):
            writer.write_image(key, image_bytes(key, 16, "JPEG"), float(label))
        if num_classes is not None:
            writer.write_property(num_classes, 16, 16)
    return path


def write_bin(path: Path, image_bytes, pairs: int = 12) -> Path:
    """``pairs`` pairs alternating genuine/impostor (labels need not be true for plumbing tests)."""
    sources = [image_bytes(10_000 + j, 16, "PNG") for j in range(2 * pairs)]
    return PairSet(sources, [i % 2 == 0 for i in range(pairs)], "tiny", size=16).save_bin(path)


@pytest.fixture
def tree(tmp_path, identity_tree) -> Path:
    return identity_tree(tmp_path / "train", {"anna": 4, "bob": 3, "carl": 5})


def test_identity_folders_give_classes_and_labelled_pairs(tree):
    dm = FaceDataModule(str(tree), batch_size=4, num_workers=0, size=SIZE)
    assert dm.num_classes == 3 and dm.val_set_names == []
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["img_a"].shape == batch["img_b"].shape == (4, 3, SIZE, SIZE)
    assert batch["img_a"].dtype == torch.float32 and 0 <= batch["img_a"].min() and batch["img_a"].max() <= 1
    assert torch.equal(batch["genuine"], batch["label_a"] == batch["label_b"])
    assert int(batch["label_a"].max()) < dm.num_classes


def test_val_sets_one_loader_each_with_dict_items(tree, tmp_path, image_bytes):
    specs = {"first": str(write_bin(tmp_path / "a.bin", image_bytes)),
             "second": str(write_bin(tmp_path / "b.bin", image_bytes, pairs=10))}
    dm = FaceDataModule(str(tree), val_sets=specs, batch_size=4, num_workers=0, size=SIZE)
    assert dm.val_set_names == ["first", "second"]
    dm.setup("validate")
    loaders = dm.val_dataloader()
    assert [len(loader.dataset.pair_set) for loader in loaders] == [12, 10]
    assert [len(loader.dataset) for loader in loaders] == [24, 20]  # distinct faces, each loaded once
    batch = next(iter(loaders[0]))
    assert set(batch) == {"index", "face"}
    assert batch["face"].shape == (8, SIZE, SIZE, 3) and batch["face"].dtype == torch.uint8
    faces = loaders[0].dataset
    for k, face in zip(batch["index"].tolist(), batch["face"]):
        np.testing.assert_array_equal(face.numpy(), faces.pair_set.load_image(faces.first[k]))
    # the first batch's faces complete 4 pairs, genuine and impostor alike (AlternatingOrder)
    seen = set(batch["index"].tolist())
    done = [i for i in range(12) if {int(faces.slot[2 * i]), int(faces.slot[2 * i + 1])} <= seen]
    labels = faces.pair_set.labels[done]
    assert len(done) == 4 and labels.any() and not labels.all()


def test_alternating_order_interleaves_then_appends_the_surplus():
    labels = np.array([True, True, True, False, False])
    assert list(AlternatingOrder(labels)) == [0, 3, 1, 4, 2]


def test_same_seed_same_augmented_batch_other_seed_differs(tree):
    def first(seed):
        dm = FaceDataModule(str(tree), batch_size=4, num_workers=0, size=SIZE, seed=seed)
        return next(iter(dm.train_dataloader()))["img_a"]

    assert torch.equal(first(0), first(0))
    assert not torch.equal(first(0), first(1))


def test_augmented_items_depend_only_on_their_draw_key(tree):
    # What a mid-epoch resume or another worker count needs: no augmentation state carried between items.
    pairs = FaceDataModule(str(tree), batch_size=4, num_workers=0, size=SIZE).train_dataloader().dataset
    keys = [3, 14, 3, 25, 14]
    items = [pairs[k] for k in keys]
    assert torch.equal(items[0]["img_a"], items[2]["img_a"]) and torch.equal(items[1]["img_b"], items[4]["img_b"])
    assert not torch.equal(pairs[3 + len(pairs)]["img_a"], items[0]["img_a"])  # same anchor, next epoch


def test_seed_worker_reaches_the_augmentation(tree, monkeypatch):
    dm = FaceDataModule(str(tree), batch_size=4, num_workers=0, size=SIZE)
    pairs = dm.train_dataloader().dataset
    augment = pairs.dataset.transform
    assert isinstance(augment, transforms.Augment)
    image = (np.arange(SIZE * SIZE * 3) % 251).astype(np.uint8).reshape(SIZE, SIZE, 3)
    draws = []
    for worker_seed in (1, 1, 2):
        monkeypatch.setattr(transforms, "get_worker_info", lambda: SimpleNamespace(dataset=pairs, seed=worker_seed))
        transforms.seed_worker(0)
        draws.append([augment(image) for _ in range(4)])
    assert all(np.array_equal(a, b) for a, b in zip(draws[0], draws[1]))
    assert not all(np.array_equal(a, b) for a, b in zip(draws[0], draws[2]))


def test_ms1m_style_rec(tmp_path, image_bytes):
    rec = write_rec(tmp_path / "train.rec", [0, 0, 1, 1, 2, 2, 2], image_bytes, num_classes=3)
    dm = FaceDataModule(str(rec), batch_size=3, num_workers=0, size=SIZE, augment=False)
    assert dm.num_classes == 3
    dm.setup("fit")
    assert len(dm.train_set) == 7  # the header record is not an image
    batch = next(iter(dm.train_dataloader()))
    assert batch["img_a"].shape == (3, 3, SIZE, SIZE)
    assert set(batch["label_a"].tolist()) <= {0, 1, 2}


def test_rec_labels_beyond_the_property_classes_are_reported(tmp_path, image_bytes):
    rec = write_rec(tmp_path / "train.rec", [0, 1, 2, 3], image_bytes, num_classes=2)
    dm = FaceDataModule(str(rec), batch_size=2, num_workers=0, size=SIZE)
    assert dm.num_classes == 2
    with pytest.raises(DataFormatError, match=r"label 3 >= num_classes 2"):
        dm.setup("fit")


def test_missing_paths_are_named(tmp_path, tree):
    with pytest.raises(DataFormatError, match="nowhere"):
        _ = FaceDataModule(str(tmp_path / "nowhere"), num_workers=0).num_classes
    with pytest.raises(DataFormatError, match=r"missing\.rec"):
        _ = FaceDataModule(str(tmp_path / "missing.rec"), num_workers=0).num_classes
    dm = FaceDataModule(str(tree), val_sets={"lfw": str(tmp_path / "lfw.bin")}, num_workers=0)
    with pytest.raises(DataFormatError, match=r"lfw\.bin"):
        dm.setup("fit")
    dm = FaceDataModule(str(tree), val_sets={"lfw": f"lfw:{tmp_path / 'no_lfw'}"}, num_workers=0)
    with pytest.raises(DataFormatError, match="pairs.txt"):
        dm.setup("validate")


def test_a_batch_larger_than_the_data_is_reported(tree):
    with pytest.raises(DataFormatError, match="lower batch_size"):
        FaceDataModule(str(tree), batch_size=64, num_workers=0).train_dataloader()


def test_bad_images_stop_training_unless_skipped(tree):
    bad = tree / "bob" / "bob_0002.png"
    bad.write_bytes(b"not an image")
    dm = FaceDataModule(str(tree), batch_size=4, num_workers=0, size=SIZE)
    pairs = dm.train_dataloader().dataset
    index = dm.train_set.paths.index(bad)
    with pytest.raises(DataFormatError, match="bob_0002"):
        pairs.load(index)
    dm = FaceDataModule(str(tree), batch_size=4, num_workers=0, size=SIZE, skip_bad_records=True)
    pairs = dm.train_dataloader().dataset
    with pytest.warns(UserWarning, match="bob_0002"):
        image = pairs.load(index)
    assert image.shape == (3, SIZE, SIZE)


def test_kz_celeb25_training_folders(shared_dir):
    dm = FaceDataModule(str(shared_dir / "data/kz_celeb25/training"), batch_size=2, num_workers=0)
    assert dm.num_classes == 25
    assert len(dm.train_set) == 1845
    batch = next(iter(dm.train_dataloader()))
    assert batch["img_a"].shape == (2, 3, 112, 112)


def test_kz_celeb25_broken_validation_bin_is_refused(shared_dir):
    spec = str(shared_dir / "data/kz_celeb25/validation/validation.bin")
    dm = FaceDataModule(str(shared_dir / "data/kz_celeb25/training"), val_sets={"kz": spec}, num_workers=0)
    with pytest.raises(VerificationSetError, match="all 749 pairs are marked genuine"):
        dm.setup("validate")


def test_training_validation_of_distinct_faces_equals_pair_by_pair_scores(tree, tmp_path, image_bytes):
    """Validation through the distinct-face loader (one grid per face, pairs scored at the epoch's end) gives the
    metrics of the model's own pair_scores computed pair by pair, twice (the second epoch from the face cache)."""
    import lightning as L

    from xcos_lightning.metrics.verification import verification_metrics
    from xcos_lightning.models import GridBackbone
    from xcos_lightning.module import XCosModule

    sources = [image_bytes(j % 30, 16, "PNG") for j in range(40)]  # 20 pairs over 30 distinct images
    spec = str(PairSet(sources, [i % 3 == 0 for i in range(20)], "dup", size=16).save_bin(tmp_path / "dup.bin"))
    dm = FaceDataModule(str(tree), val_sets={"dup": spec}, batch_size=3, num_workers=0, size=SIZE,
                        face_cache=str(tmp_path / "faces"))
    torch.manual_seed(0)
    module = XCosModule(GridBackbone("tiny", grid_channels=8), num_classes=3, xcos=True, teacher="self")
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    first = {k: float(v) for k, v in trainer.validate(module, datamodule=dm, verbose=False)[0].items()}
    assert len(dm.val_faces("dup")) == 30 and dm.val_faces("dup").valid.all()
    second = {k: float(v) for k, v in trainer.validate(module, datamodule=dm, verbose=False)[0].items()}
    assert first == second

    pair_set = dm.val_pair_set("dup")
    module.eval()
    with torch.inference_mode():
        scores = [module.model.pair_scores(pair_set[i]["img_a"][None], pair_set[i]["img_b"][None], flip_tta=True)
                  for i in range(len(pair_set))]
    labels = torch.from_numpy(pair_set.labels)
    for kind in ("cos", "xcos"):
        expected = verification_metrics(torch.cat([s[kind] for s in scores]), labels, 10)
        assert first[f"val/dup/acc_{kind}"] == pytest.approx(expected["acc"], abs=1e-6)
        assert first[f"val/dup/eer_threshold_{kind}"] == pytest.approx(expected["eer_threshold"], abs=1e-5)
