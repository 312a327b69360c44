"""Property tests: any payloads round-trip; any corruption gives the right bytes or a DataFormatError."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xcos_lightning.datamodules.recordio import MAGIC_BYTES, RecordIOReader, RecordIOWriter, pack_payload
from xcos_lightning.errors import DataFormatError

# PIL warns (UserWarning) about some corrupt chunks it can still decode; that is not a failure here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def payload(draw) -> bytes:
    """Header + bytes, with magic numbers spliced in at 4-byte-aligned spots (the multi-part case)."""
    body = bytearray(draw(st.binary(max_size=96)))
    for _ in range(draw(st.integers(0, 3))):
        spot = 4 * draw(st.integers(0, len(body) // 4))
        body[spot:spot] = MAGIC_BYTES
    label = draw(st.integers(0, 10_000).map(float) | st.lists(st.integers(0, 9).map(float), min_size=1, max_size=4))
    return pack_payload(label, bytes(body))


def write(folder: Path, payloads: list[bytes], header: bool = False) -> tuple[Path, list[int]]:
    """Images at keys 1..N; record 0 is an MS1M header if ``header`` (else absent, so never read as one)."""
    rec = folder / "p.rec"
    with RecordIOWriter(rec) as writer:
        if header:
            writer.write_header_record(len(payloads))
        for key, data in enumerate(payloads, 1):
            writer.write(key, data)
    offsets = [int(line.split("\t")[1]) for line in (folder / "p.idx").read_text().splitlines()]
    return rec, offsets[1:] if header else offsets


@SETTINGS
@given(st.lists(payload(), min_size=1, max_size=6), st.booleans())
def test_round_trip(payloads, header):
    with tempfile.TemporaryDirectory() as tmp:
        rec, _ = write(Path(tmp), payloads, header)
        reader = RecordIOReader(rec)
        assert [reader.read(k) for k in reader.image_keys] == payloads
        if header:  # without .idx the file is scanned; the header record keeps the image keys 1..N
            (Path(tmp) / "p.idx").unlink()
            scanned = RecordIOReader(rec)
            assert [scanned.read(k) for k in scanned.image_keys] == payloads


@SETTINGS
@given(st.lists(payload(), min_size=1, max_size=5), st.data())
def test_corrupted_rec_gives_right_bytes_or_data_format_error(payloads, data):
    with tempfile.TemporaryDirectory() as tmp:
        rec, offsets = write(Path(tmp), payloads)
        raw = bytearray(rec.read_bytes())
        ends = offsets[1:] + [len(raw)]
        touched = set()
        if data.draw(st.booleans(), label="truncate"):
            cut = data.draw(st.integers(0, len(raw) - 1), label="cut")
            touched = set(range(cut, len(raw)))
            del raw[cut:]
        for _ in range(data.draw(st.integers(0, 4), label="flips")):
            if raw:
                spot = data.draw(st.integers(0, len(raw) - 1), label="spot")
                raw[spot] = data.draw(st.integers(0, 255), label="value")
                touched.add(spot)
        rec.write_bytes(bytes(raw))
        reader = RecordIOReader(rec)
        for key, (start, end) in enumerate(zip(offsets, ends), 1):
            try:
                got = reader.read(key)
            except DataFormatError as exc:
                assert str(rec) in str(exc) and f"record {key}" in str(exc)
                continue
            if not touched & set(range(start, end)):
                assert got == payloads[key - 1]


@SETTINGS
@given(st.binary(max_size=200))
def test_garbage_idx_or_rec(blob):
    with tempfile.TemporaryDirectory() as tmp:
        rec, idx = Path(tmp) / "g.rec", Path(tmp) / "g.idx"
        rec.write_bytes(blob)
        for idx_text in (blob[:60], None):  # a garbage .idx, then no .idx (sequential scan)
            if idx_text is None:
                idx.unlink()
            else:
                idx.write_bytes(idx_text)
            try:
                reader = RecordIOReader(rec)
                for key in reader.keys:
                    reader.read(key)
            except DataFormatError:
                pass


@SETTINGS
@given(st.integers(0, 10_000), st.sampled_from(["PNG", "JPEG"]), st.data())
def test_mutated_image_decodes_or_data_format_error(image_bytes, seed, fmt, data):
    image = bytearray(image_bytes(seed, size=12, fmt=fmt))
    for _ in range(data.draw(st.integers(1, 4))):
        image[data.draw(st.integers(0, len(image) - 1))] = data.draw(st.integers(0, 255))
    with tempfile.TemporaryDirectory() as tmp:
        with RecordIOWriter(Path(tmp) / "m.rec") as writer:
            writer.write_image(1, bytes(image), 0)
        try:
            decoded = RecordIOReader(Path(tmp) / "m.rec").read_image(1)
        except DataFormatError as exc:
            assert "m.rec: record 1" in str(exc)
        else:
            assert decoded.dtype == np.uint8 and decoded.ndim == 3 and decoded.shape[2] == 3
