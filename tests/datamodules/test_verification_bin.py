"""Verification .bin: crafted pickles never run, the real broken kz .bin is refused, save_bin round-trips."""
from __future__ import annotations

import os
import pickle
import pickletools
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xcos_lightning.datamodules.pair_set import PairSet
from xcos_lightning.datamodules.verification_bin import load_bin
from xcos_lightning.errors import DataFormatError, UnsafeFileError, VerificationSetError

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class _Reduce:
    """Pickles as ``func(*args)``: what a crafted .bin uses to run code on load."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _crafted(marker: Path) -> dict[str, bytes]:
    touch = f"touch {marker}"
    write = f"open({str(marker)!r}, 'w').write('x')"
    return {
        "os.system": pickle.dumps(([_Reduce(os.system, touch), b"x"], [True]), protocol=4),
        "eval": pickle.dumps(([b"a", _Reduce(eval, write)], [True]), protocol=2),
        "exec": pickle.dumps(_Reduce(exec, write), protocol=0),
        # hand-written protocol-0 GLOBAL opcode, as in published pickle exploits
        "posix.system": b"cposix\nsystem\n(S'" + touch.encode() + b"'\ntR.",
        "_codecs.encode": pickle.dumps(([_Reduce(__import__("codecs").encode, "x", "rot13")], [True]), protocol=2),
    }


@pytest.mark.parametrize("refused", ["os.system", "eval", "exec", "posix.system", "_codecs.encode"])
def test_crafted_pickle_is_refused_and_never_runs(tmp_path, refused):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.bin"
    path.write_bytes(_crafted(marker)[refused])
    with pytest.raises(UnsafeFileError) as info:
        load_bin(path)
    message = str(info.value)
    assert str(path) in message
    assert refused.split(".")[-1] in message  # names the refused global (posix/nt/builtins module varies)
    assert not marker.exists()


def test_real_broken_validation_bin(shared_dir):
    path = shared_dir / "data" / "kz_celeb25" / "validation" / "validation.bin"
    with pytest.raises(VerificationSetError) as info:
        load_bin(path)
    message = str(info.value)
    assert str(path) in message and "all 749 pairs are marked genuine" in message
    assert "107 of 749 pairs pair an image with itself" in message
    pairs = load_bin(path, check=False)  # still inspectable on request
    assert len(pairs) == 749 and pairs.labels.all() and pairs.self_pairs().sum() == 107
    item = pairs[3]
    assert item["img_a"].shape == (3, 112, 112) and item["img_a"].dtype == torch.float32
    assert item["label"].dtype == torch.bool and item["index"] == 3


def test_save_bin_round_trip(tmp_path, image_bytes):
    images = [image_bytes(i, size=112, fmt=("PNG", "JPEG")[i % 2]) for i in range(8)]
    labels = [True, False, True, False]
    written = PairSet(images, labels, "mini").check().save_bin(tmp_path / "mini.bin")
    assert pickle.loads(written.read_bytes()) == (images, labels)  # untouched 112x112 images keep their bytes
    loaded = load_bin(written)
    assert loaded.sources == images and loaded.labels.tolist() == labels
    assert torch.equal(loaded[1]["img_b"], PairSet(images, labels, "mini")[1]["img_b"])


def test_save_bin_encodes_prepared_images(tmp_path, image_bytes):
    big = [image_bytes(i, size=40) for i in range(4)]
    pairs = PairSet(big, [True, False], "big", size=16, crop=32)
    loaded = load_bin(pairs.save_bin(tmp_path / "big.bin", fmt="PNG"), size=16)
    assert all((loaded.load_image(j) == pairs.load_image(j)).all() for j in range(4))  # PNG is lossless


def test_old_protocols_and_python2_strings_load(tmp_path, image_bytes):
    images, labels = [image_bytes(0), image_bytes(1)], [True]
    path = tmp_path / "p.bin"
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):  # protocols <= 2 store bytes via _codecs.encode
        path.write_bytes(pickle.dumps((images, labels), protocol=protocol))
        assert load_bin(path, check=False).sources == images
    path.write_bytes(pickle.dumps(([b"", b"x"], labels), protocol=2))  # empty bytes pickle as bytes()
    assert load_bin(path, check=False).sources == [b"", b"x"]
    # Python 2 (insightface's original packers): images are str (SHORT_BINSTRING), loaded as bytes
    path.write_bytes(b"\x80\x02](U\x03abcU\x03defe]\x88a\x86.")
    assert load_bin(path, check=False).sources == [b"abc", b"def"]


def test_wrong_structure(tmp_path):
    path = tmp_path / "w.bin"
    for obj, match in [({"a": 1}, "expected a pickled"), (([b"a"], [True]), "1 images for 1 pairs"),
                       (([b"a", "b"], [True]), "non-bytes"), (([b"a", b"b"], [2]), "True/False")]:
        path.write_bytes(pickle.dumps(obj))
        with pytest.raises(DataFormatError, match=match):
            load_bin(path)
    path.write_bytes(b"not a pickle")
    with pytest.raises(DataFormatError, match=r"w\.bin: not a readable verification \.bin"):
        load_bin(path)


def _load_or_documented_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "h.bin"
        path.write_bytes(data)
        try:
            pairs = load_bin(path, check=False)
        except (DataFormatError, UnsafeFileError) as exc:
            assert str(path) in str(exc)
            return
        assert len(pairs.sources) == 2 * len(pairs) and all(isinstance(s, bytes) for s in pairs.sources)


pair_lists = st.integers(0, 4).flatmap(
    lambda n: st.tuples(st.lists(st.binary(max_size=24), min_size=2 * n, max_size=2 * n),
                        st.lists(st.booleans(), min_size=n, max_size=n)))


@SETTINGS
@given(pair_lists, st.integers(0, pickle.HIGHEST_PROTOCOL))
def test_valid_bins_round_trip(obj, protocol):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v.bin"
        path.write_bytes(pickle.dumps(obj, protocol=protocol))
        pairs = load_bin(path, check=False)
        assert pairs.sources == obj[0] and pairs.labels.tolist() == obj[1]


@SETTINGS
@given(pair_lists, st.integers(0, pickle.HIGHEST_PROTOCOL), st.data())
def test_mutated_bins(obj, protocol, data):
    blob = bytearray(pickle.dumps(obj, protocol=protocol))
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        spot = data.draw(st.integers(0, max(len(blob) - 1, 0)))
        if action == "flip" and blob:
            blob[spot] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del blob[spot:]
        else:
            blob[spot:spot] = data.draw(st.binary(min_size=1, max_size=8))
    _load_or_documented_error(bytes(blob))


python_objects = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner) | st.frozensets(st.integers(), max_size=3)
    | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=12)


@SETTINGS
@given(python_objects, st.integers(0, pickle.HIGHEST_PROTOCOL))
def test_arbitrary_pickles(obj, protocol):
    _load_or_documented_error(pickle.dumps(obj, protocol=protocol))


def test_opcode_stream_of_real_bin_needs_no_global(shared_dir):
    # Documents why the allow-list can be this small: real .bin files name no global at all.
    data = (shared_dir / "data" / "kz_celeb25" / "training" / "training.bin").read_bytes()
    assert not [op.name for op, _, _ in pickletools.genops(data) if "GLOBAL" in op.name or op.name == "INST"]
