"""The face cache of evaluation: decoded faces reused, changed files re-read, corrupt files rebuilt, two writers."""
import multiprocessing as mp
import warnings

import numpy as np
import pytest
import torch

from tests.helpers.toy_faces import TinyNet, smooth_png
from xcos_lightning.datamodules.face_cache import FaceCache
from xcos_lightning.datamodules.pair_set import PairSet
from xcos_lightning.datamodules.pairs_file import load_pair_set
from xcos_lightning.errors import DataFormatError
from xcos_lightning.evaluate import DistinctImages, score_pair_set


def _pair_set(folder, crop=None, write=True) -> PairSet:
    """6 pairs over 5 distinct PNG files (file 0 appears three times): 12 slots, 5 distinct faces."""
    for i in range(5 if write else 0):
        (folder / f"f{i}.png").write_bytes(smooth_png(i, size=40))
    order = [0, 1, 0, 2, 3, 4, 1, 2, 0, 3, 4, 1]
    return PairSet([folder / f"f{i}.png" for i in order], [True, False] * 3, "toy", size=32, crop=crop)


def _all_faces(images: DistinctImages) -> dict[int, np.ndarray]:
    return {int(k): f.numpy() for rows, faces in images.batches(2, 0) for k, f in zip(rows, faces)}


def test_second_pass_reads_every_face_from_the_cache(tmp_path):
    pair_set, cache = _pair_set(tmp_path), FaceCache(tmp_path / "cache")
    cold = DistinctImages(pair_set, cache)
    assert len(cold) == 5 and not cold.valid.any()
    faces = _all_faces(cold)
    for k, j in enumerate(cold.first):
        np.testing.assert_array_equal(faces[k], pair_set.load_image(j))
    warm = DistinctImages(pair_set, cache)
    assert warm.valid.all()
    pair_set.load_image = None  # a warm pass must not decode anything
    assert {k: f.tobytes() for k, f in _all_faces(warm).items()} == {k: f.tobytes() for k, f in faces.items()}


def test_without_a_cache_no_file_is_hashed(tmp_path, monkeypatch):
    """--no-cache: the distinct faces come from the sources themselves; no file is read and hashed before its
    decoding, and the faces equal the cached path's."""
    hashed = []
    monkeypatch.setattr("xcos_lightning.datamodules.pair_set.content_key", lambda data: hashed.append(data) or str(hash(data)))
    pair_set = _pair_set(tmp_path)
    images = DistinctImages(pair_set)
    assert hashed == [] and len(images) == 5
    faces = _all_faces(images)
    assert hashed == []
    for j in range(len(pair_set.sources)):  # each pair slot points at its own file's face
        np.testing.assert_array_equal(faces[int(images.slot[j])], pair_set.load_image(j))
    assert len(DistinctImages(_pair_set(tmp_path), FaceCache(tmp_path / "cache"))) == 5 and len(hashed) == 5


def test_other_preprocessing_is_another_key(tmp_path):
    cache = FaceCache(tmp_path / "cache")
    _all_faces(DistinctImages(_pair_set(tmp_path), cache))
    cropped = DistinctImages(_pair_set(tmp_path, crop=20), cache)
    assert not cropped.valid.any()  # same files, other crop: nothing reused
    faces = _all_faces(cropped)
    np.testing.assert_array_equal(faces[0], cropped.pair_set.load_image(0))


def test_a_changed_file_is_read_again(tmp_path):
    pair_set, cache = _pair_set(tmp_path), FaceCache(tmp_path / "cache")
    _all_faces(DistinctImages(pair_set, cache))
    (tmp_path / "f3.png").write_bytes(smooth_png(99, size=40))
    changed = PairSet(pair_set.sources, pair_set.labels, "toy", size=32)  # a new run: keys read afresh
    images = DistinctImages(changed, cache)
    stale = [k for k, j in enumerate(images.first) if changed.sources[j].name == "f3.png"]
    assert images.valid.sum() == 4 and not images.valid[stale].any()
    faces = _all_faces(images)
    np.testing.assert_array_equal(faces[stale[0]], changed.load_image(images.first[stale[0]]))
    assert DistinctImages(changed, cache).valid.all()


def test_truncated_cache_is_rebuilt_with_a_warning(tmp_path):
    pair_set, cache = _pair_set(tmp_path), FaceCache(tmp_path / "cache")
    images = DistinctImages(pair_set, cache)
    expected = _all_faces(images)
    path = cache.path(images.cache_key)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.warns(RuntimeWarning, match="unreadable"):
        again = DistinctImages(pair_set, cache)
    assert not again.valid.any()
    assert {k: f.tobytes() for k, f in _all_faces(again).items()} == {k: f.tobytes() for k, f in expected.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert DistinctImages(pair_set, cache).valid.all()


def test_a_flipped_byte_fails_its_checksum(tmp_path):
    pair_set, cache = _pair_set(tmp_path), FaceCache(tmp_path / "cache")
    images = DistinctImages(pair_set, cache)
    _all_faces(images)
    path = cache.path(images.cache_key)
    data = bytearray(path.read_bytes())
    data[16 + 32 * 32 * 3 + 5] ^= 0xFF  # row 1
    path.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="checksum"):
        again = DistinctImages(pair_set, cache)
    assert again.valid.tolist() == [True, False, True, True, True]


def _fill(folder, cache_folder, barrier) -> None:
    pair_set = _pair_set(folder, write=False)
    images = DistinctImages(pair_set, FaceCache(cache_folder))
    batches = images.batches(1, 0)
    next(batches)
    barrier.wait()  # both writers hold a half-filled temporary file at once
    for _ in batches:
        pass


def test_two_processes_filling_at_once_leave_one_valid_cache(tmp_path):
    _pair_set(tmp_path)
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_fill, args=(tmp_path, tmp_path / "cache", barrier)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    files = sorted(p.name for p in (tmp_path / "cache" / "faces").iterdir())
    assert len(files) == 1 and files[0].endswith(".faces")  # no temporary file left behind
    pair_set = _pair_set(tmp_path, write=False)
    images = DistinctImages(pair_set, FaceCache(tmp_path / "cache"))
    assert images.valid.all()
    for k, face in _all_faces(images).items():
        np.testing.assert_array_equal(face, pair_set.load_image(images.first[k]))


def test_scores_with_and_without_cache_are_identical(tmp_path):
    model = TinyNet().eval()
    pair_set, cache = _pair_set(tmp_path), FaceCache(tmp_path / "cache")
    plain = score_pair_set(model, pair_set, batch_size=2, progress=False)
    cold = score_pair_set(model, pair_set, batch_size=2, progress=False, cache=cache)
    warm = score_pair_set(model, pair_set, batch_size=2, progress=False, cache=cache)
    # oracle: each pair embedded on its own from the decoded files, no dedup, no cache
    with torch.inference_mode():
        ref = []
        for i in range(len(pair_set)):
            item = pair_set[i]
            x = torch.stack([item["img_a"], item["img_b"]])
            e = torch.nn.functional.normalize(model(x) + model(x.flip(-1)), dim=1)
            ref.append((e[0] * e[1]).sum())
    torch.testing.assert_close(plain["cos"], torch.stack(ref), rtol=0, atol=1e-6)
    assert torch.equal(plain["cos"], cold["cos"]) and torch.equal(cold["cos"], warm["cos"])


def test_plain_pairs_list(tmp_path):
    (tmp_path / "imgs").mkdir()
    for name in ("a 1.png", "b.png", "c.png"):
        (tmp_path / "imgs" / name).write_bytes(smooth_png(len(name), size=40))
    (tmp_path / "list.txt").write_text("# path_a path_b same\nimgs/a 1.png\timgs/b.png\t1\n\n"
                                       "imgs/b.png imgs/c.png diff\nimgs/c.png imgs/b.png TRUE\n"
                                       "imgs/a 1.png\timgs/c.png\timpostor\n")
    pair_set = load_pair_set(f"list:{tmp_path / 'list.txt'}", size=32)
    assert pair_set.labels.tolist() == [True, False, True, False]
    assert [p.name for p in pair_set.sources[:4]] == ["a 1.png", "b.png", "b.png", "c.png"]
    (tmp_path / "other.txt").write_text("a 1.png\tb.png\tsame\nb.png c.png 0\n")
    rooted = load_pair_set(f"list:{tmp_path / 'imgs'}:{tmp_path / 'other.txt'}", size=32, check=False)
    assert rooted.sources[0] == tmp_path / "imgs" / "a 1.png" and rooted.labels.tolist() == [True, False]


@pytest.mark.parametrize("text, match", [("a.png b.png maybe\n", "label 'maybe'"),
                                         ("a.png b.png\n", "expected 'path_a path_b same'"),
                                         ("a.png gone.png 1\n", "1 images named by the pairs list are missing")])
def test_pairs_list_errors_name_the_line(tmp_path, text, match):
    (tmp_path / "a.png").write_bytes(smooth_png(0))
    (tmp_path / "b.png").write_bytes(smooth_png(1))
    (tmp_path / "list.txt").write_text(text)
    with pytest.raises(DataFormatError, match=match):
        load_pair_set(f"list:{tmp_path / 'list.txt'}")
