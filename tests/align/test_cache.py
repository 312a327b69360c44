"""The landmark cache: hits skip detection, a changed photo is detected again, a corrupt cache file is rebuilt
with a warning, and two processes filling one cache leave one valid cache."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xcos_lightning.align import FaceAligner, LandmarkCache
from xcos_lightning.align.cache import CACHE_FILE
from xcos_lightning.datamodules.aligned import SourceAlignment

# A detector that finds one face whose landmarks encode the photo's mean colour, and counts its calls.
DETECTOR = '''
import numpy as np
CALLS = []
def detect(image):
    CALLS.append(1)
    shift = float(image.mean()) / 32
    pts = np.array([[38.3, 51.7], [73.5, 51.5], [56.0, 71.7], [41.5, 92.4], [70.7, 92.2]]) + shift
    return np.array([[10, 10, 100, 110]]), pts[None], np.array([0.99])
'''


@pytest.fixture
def photos(tmp_path, monkeypatch):
    (tmp_path / "count_detector.py").write_text(DETECTOR)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("count_detector", None)  # a fresh call counter per test
    paths = []
    for k in range(6):
        path = tmp_path / f"photo{k}.png"
        Image.fromarray(np.full((120, 120, 3), 20 * k, np.uint8)).save(path)
        paths.append(path)
    return paths


def _calls():
    import count_detector
    return len(count_detector.CALLS)


def _align(paths, cache_dir):
    return SourceAlignment(FaceAligner("count_detector:detect", cache=LandmarkCache(cache_dir)), paths, "set",
                           progress=False)


def test_hits_skip_detection_and_a_changed_photo_is_detected_again(photos, tmp_path):
    first = _align(photos, tmp_path / "cache")
    assert _calls() == 6
    again = _align(photos, tmp_path / "cache")
    assert _calls() == 6  # all six from the cache
    for a, b in zip(first.faces, again.faces):
        np.testing.assert_array_equal(a.points, b.points)
    Image.fromarray(np.full((120, 120, 3), 200, np.uint8)).save(photos[2])  # the user edits one photo
    changed = _align(photos, tmp_path / "cache")
    assert _calls() == 7
    np.testing.assert_allclose(changed.faces[2].points - first.faces[2].points, (200 - 40) / 32, atol=1e-9)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_cache_is_rebuilt_with_a_warning(photos, tmp_path, damage):
    cache_dir = tmp_path / "cache"
    _align(photos, cache_dir).faces
    db = cache_dir / CACHE_FILE
    for side in ("-wal", "-shm"):
        Path(f"{db}{side}").unlink(missing_ok=True)
    data = db.read_bytes()
    db.write_bytes(data[:len(data) // 3] if damage == "truncate" else b"not a database" * 100)
    with pytest.warns(RuntimeWarning, match="unreadable .* rebuilt"):
        rebuilt = _align(photos, cache_dir)
    assert _calls() == 12 and all(f is not None for f in rebuilt.faces)
    assert len(list(cache_dir.glob(f"{CACHE_FILE}.corrupt-*"))) == 1  # kept aside, not deleted


def test_two_processes_fill_one_cache(photos, tmp_path):
    script = (f"import sys; sys.path.insert(0, {str(photos[0].parent)!r})\n"
              "from pathlib import Path\n"
              "from xcos_lightning.align import FaceAligner, LandmarkCache\n"
              "from xcos_lightning.datamodules.aligned import SourceAlignment\n"
              f"paths = [Path(p) for p in {[str(p) for p in photos]!r}]\n"
              f"a = FaceAligner('count_detector:detect', cache=LandmarkCache({str(tmp_path / 'cache')!r}))\n"
              "SourceAlignment(a, paths, 'set', progress=False)\n")
    procs = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    cache = LandmarkCache(tmp_path / "cache")
    rows = cache.db.execute("SELECT count(*), count(DISTINCT key) FROM faces").fetchone()
    assert rows == (6, 6)
    _align(photos, tmp_path / "cache")
    assert _calls() == 0  # this process found everything in the cache the two others wrote


def test_a_photo_listed_several_times_is_detected_once_and_shares_its_face(photos, tmp_path):
    listed = [photos[0], photos[1], photos[0], photos[2], photos[1], photos[0]]  # pair slots repeat files
    aligned = SourceAlignment(FaceAligner("count_detector:detect"), listed, "set", progress=False)
    assert _calls() == 3
    alone = [SourceAlignment(FaceAligner("count_detector:detect"), [p], "set", progress=False) for p in listed]
    aligner = FaceAligner("count_detector:detect")
    for j, one in enumerate(alone):
        assert aligned.keys[j] == one.keys[0]
        np.testing.assert_array_equal(aligned.faces[j].points, one.faces[0].points)
        np.testing.assert_allclose(aligned.matrices[j], aligner.matrix(one.faces[0]), atol=1e-12)
    part = aligned.subset([3, 5])
    assert part.keys == [aligned.keys[3], aligned.keys[5]] and part.misses == 0
    np.testing.assert_array_equal(part.matrices[1], aligned.matrices[5])
