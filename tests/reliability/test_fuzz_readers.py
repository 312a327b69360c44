"""Property tests beyond tests/datamodules: random and mutated inputs to the RecordIO, pairs.txt and .bin readers
give correct data or the documented error (DataFormatError / UnsafeFileError, KeyError for a missing key),
never another exception and never a hang (each call runs under a 20 s alarm)."""
from __future__ import annotations

import contextlib
import io
import signal
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from xcos_lightning.datamodules.pairs_file import parse_pairs
from xcos_lightning.datamodules.recordio import MAGIC_BYTES, RecordIOReader, RecordIOWriter
from xcos_lightning.datamodules.recordio_dataset import RecordIODataset
from xcos_lightning.datamodules.verification_bin import load_bin
from xcos_lightning.errors import DataFormatError, UnsafeFileError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # PIL warns about some corrupt chunks
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@contextlib.contextmanager
def no_hang(seconds: int = 20):
    def fail(*_):
        raise AssertionError(f"reader still running after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@SETTINGS
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=5),
       st.lists(st.tuples(st.integers(0, 8), st.integers(0, 400) | st.integers(0, 2**64)), max_size=6))
def test_mutated_idx_gives_records_or_documented_errors(payloads, lines):
    with tempfile.TemporaryDirectory() as tmp:
        rec = Path(tmp) / "m.rec"
        with RecordIOWriter(rec) as writer:
            for key, data in enumerate(payloads):
                writer.write(key, data)
        idx = rec.with_suffix(".idx")
        good = dict(line.split("\t") for line in idx.read_text().splitlines())
        idx.write_text("".join(f"{k}\t{o}\n" for k, o in lines))  # keys and offsets anywhere
        with no_hang():
            try:
                reader = RecordIOReader(rec)
            except DataFormatError as exc:
                assert str(idx) in str(exc) or str(rec) in str(exc)
                return
            for key, offset in reader.offsets.items():
                try:
                    got = reader.read(key)
                except DataFormatError as exc:
                    assert f"{rec}: record {key}" in str(exc)
                    continue
                assert isinstance(got, bytes)
                if key < len(payloads) and str(offset) == good.get(str(key)):
                    assert got == payloads[key]  # an offset left right reads the right record


labels = st.integers(0, 50).map(float) | st.lists(st.integers(0, 50).map(float), min_size=1, max_size=3)


@SETTINGS
@given(st.lists(labels, min_size=1, max_size=6), st.booleans())
def test_dataset_round_trip_of_labels_and_images(label_list, magic_in_image):
    with tempfile.TemporaryDirectory() as tmp:
        rec = Path(tmp) / "d.rec"
        with RecordIOWriter(rec) as writer:
            for key, label in enumerate(label_list, 1):
                # PNG ignores bytes after IEND: an appended, aligned magic makes a multi-part record
                image = _png(key) + (b"\0" * (-len(_png(key)) % 4) + MAGIC_BYTES if magic_in_image else b"")
                writer.write_image(key, image, label)
        with no_hang():
            data = RecordIODataset(rec, size=8)
            first = [lab if isinstance(lab, float) else lab[0] for lab in label_list]
            assert data.labels.tolist() == [int(x) for x in first]
            for i in range(len(data)):
                image, label = data[i]
                assert image.shape == (3, 8, 8) and 0 <= float(image.min()) <= float(image.max()) <= 1
                assert label == int(first[i])


@SETTINGS
@given(st.text(max_size=200).map(lambda text: text.encode("utf-8", "surrogatepass")) | st.binary(max_size=200))
def test_random_pairs_text_parses_or_names_the_file(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pairs.txt"
        path.write_bytes(data)
        with no_hang():
            try:
                pairs = parse_pairs(path)
            except DataFormatError as exc:
                assert str(path) in str(exc)
                return
        for a, i, b, j in pairs:
            assert isinstance(i, int) and isinstance(j, int) and i >= 0 and j >= 0
            assert all(name and "/" not in name and name not in (".", "..") for name in (a, b))


@SETTINGS
@given(st.binary(max_size=300))
def test_random_bytes_as_a_bin(blob):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.bin"
        path.write_bytes(b"\x80\x04" + blob)  # a pickle protocol header, then anything
        with no_hang():
            try:
                pairs = load_bin(path, check=False)
            except (DataFormatError, UnsafeFileError) as exc:
                assert str(path) in str(exc)
                return
        assert len(pairs.sources) == 2 * len(pairs)
