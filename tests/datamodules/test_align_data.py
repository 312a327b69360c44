"""Aligned data end to end on real photos: ``xcos-convert align`` to folders, .rec and .bin with sidecars and
miss reports, ``FaceDataModule(align=...)`` and ``PairSet.align``; the second run reads landmarks back."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from xcos_lightning.align import NoFaceError
from xcos_lightning.cli.convert import main
from xcos_lightning.datamodules.face_data import FaceDataModule
from xcos_lightning.datamodules.image_folder import IdentityFolderDataset
from xcos_lightning.datamodules.pairs_file import load_pair_set
from xcos_lightning.datamodules.recordio_dataset import RecordIODataset
from xcos_lightning.datamodules.verification_bin import load_bin

NAMES = ("Aaron_Peirsol", "Abdullah_Gul")


@pytest.fixture
def photos(shared_dir, tmp_path):
    """Two LFW identities of 3 photos each, plus one photo without a face in the first."""
    root = tmp_path / "raw"
    for name in NAMES:
        (root / name).mkdir(parents=True)
        for path in sorted((shared_dir / "data/lfw" / name).glob("*.jpg"))[:3]:
            shutil.copy(path, root / name / path.name)
    Image.fromarray(np.full((250, 250, 3), 128, np.uint8)).save(root / NAMES[0] / "wall.png")
    return root


def test_convert_align_folders_then_rec_reads_the_sidecar(photos, tmp_path, capsys):
    out = tmp_path / "aligned"
    assert main(["align", str(photos), str(out), "--num-workers", "0"]) == 0
    report = capsys.readouterr().out
    assert "6 of 7 images aligned to 112x112" in report and "1 without a face (left out" in report
    assert (out / "misses.txt").read_text() == f"{NAMES[0]}/wall.png\n"
    rows = [json.loads(line) for line in (out / "landmarks.jsonl").read_text().splitlines()]
    assert len(rows) == 7 and sum(r["chosen"] is None for r in rows) == 1
    assert all(len(r["faces"][r["chosen"]]["points"]) == 5 for r in rows if r["chosen"] is not None)
    aligned = IdentityFolderDataset(out)
    assert len(aligned) == 6 and aligned.class_names == list(NAMES)
    assert all(aligned.load_image(i).shape == (112, 112, 3) for i in range(6))

    # the .rec of the same photos, with the folder's sidecar copied beside it: nothing is detected again
    rec = tmp_path / "packed.rec"
    shutil.copy(out / "landmarks.jsonl", tmp_path / "packed.rec.landmarks.jsonl")
    assert main(["align", str(photos), str(rec), "--cache-dir", str(tmp_path / "fresh_cache"), "--align", "mtcnn",
                 "--num-workers", "0", "--min-face-size", "20"]) == 0
    assert "(7 read from it, not detected again)" in capsys.readouterr().out
    packed = RecordIODataset(rec)
    assert len(packed) == 6 and packed.num_classes == 2
    for i in range(6):  # the same faces as the folders (JPEG quality 95 both times)
        assert np.abs(packed[i][0].numpy() * 255 - aligned[i][0].numpy() * 255).max() <= 1

    assert main(["align", str(photos), str(tmp_path / "strict"), "--on-miss", "error", "--num-workers", "0"]) == 2
    assert "wall.png: no face found" in capsys.readouterr().err


def test_convert_align_pairs_to_bin(shared_dir, tmp_path, capsys):
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("Aaron_Peirsol\t1\t2\nAbdullah_Gul\t1\t2\nAaron_Peirsol\t1\tAbdullah_Gul\t3\n"
                     "Aaron_Peirsol\t3\tAbdullah_Gul\t1\n")
    out = tmp_path / "four.bin"
    assert main(["align", f"pairs:{shared_dir / 'data/lfw'}:{pairs}", str(out), "--num-workers", "0"]) == 0
    assert "8 of 8 images aligned" in capsys.readouterr().out
    packed = load_bin(out)
    assert len(packed) == 4 and packed.labels.tolist() == [True, True, False, False]
    direct = load_pair_set(f"pairs:{shared_dir / 'data/lfw'}:{pairs}", aligner=_aligner())
    assert np.abs(packed.load_image(0).astype(int) - direct.load_image(0)).mean() < 3  # JPEG round trip only


def _aligner(**options):
    from xcos_lightning.align import FaceAligner
    return FaceAligner("mtcnn", **options)


def test_face_datamodule_aligns_val_sets_and_raw_training_folders(photos, tmp_path, shared_dir):
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("Aaron_Peirsol\t1\t2\nAaron_Peirsol\t1\tAbdullah_Gul\t3\n")
    spec = f"pairs:{shared_dir / 'data/lfw'}:{pairs}"
    with pytest.raises(NoFaceError, match="wall.png: no face found"):
        FaceDataModule(str(photos), {"few": spec}, align="mtcnn", align_train=True, num_workers=0).setup("fit")
    data = FaceDataModule(str(photos), {"few": spec}, batch_size=2, align="mtcnn", align_train=True,
                          align_options={"on_miss": "crop"}, num_workers=0, augment=False)
    with pytest.warns(RuntimeWarning, match="no face found in 1 of 7 images"):
        data.setup("fit")
    assert data.train_set.alignment.misses == 1
    plain = load_pair_set(spec)
    val = data.val_pair_set("few")
    # aligned and centre-cropped faces of the same photo differ; the aligned one is what convert writes
    assert np.abs(val.load_image(0).astype(int) - plain.load_image(0)).mean() > 10
    batch = next(iter(data.val_dataloader()[0]))
    faces = data.val_faces("few")
    assert batch["face"].shape[1:] == (112, 112, 3)
    k = int(batch["index"][0])  # the loader hands over the aligned face, not the crop
    np.testing.assert_array_equal(batch["face"][0].numpy(), val.load_image(faces.first[k]))


def test_identity_folders_skip_photos_without_a_face(photos):
    with pytest.warns(RuntimeWarning, match="no face found in 1 of 7 images .*left out"):
        data = IdentityFolderDataset(photos).align(_aligner(on_miss="skip"), progress=False)
    assert len(data) == 6 and data.num_classes == 2 and data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert all(p.suffix == ".jpg" for p in data.paths) and data[0][0].shape == (3, 112, 112)
    (photos / NAMES[1] / "only.png").write_bytes((photos / NAMES[0] / "wall.png").read_bytes())
    for path in (photos / NAMES[1]).glob("*.jpg"):
        path.unlink()
    with pytest.raises(Exception, match=f"no face found in any photo of 1 identities, e.g. \\['{NAMES[1]}'\\]"):
        IdentityFolderDataset(photos).align(_aligner(on_miss="skip"), progress=False)
