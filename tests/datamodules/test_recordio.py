"""RecordIO reader/writer: real kz_celeb25 files, round trips, multi-part records, MS1M header, corruption."""
from __future__ import annotations

import pickle
import struct
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from xcos_lightning.datamodules.image_folder import IdentityFolderDataset
from xcos_lightning.datamodules.recordio import MAGIC_BYTES, RecordIOReader, RecordIOWriter, frame, pack_payload
from xcos_lightning.datamodules.recordio_dataset import RecordIODataset
from xcos_lightning.errors import DataFormatError


@pytest.mark.parametrize("split,count", [("validation", 229), ("testing", 217)])
def test_real_rec_matches_identity_folders(shared_dir, split, count):
    root = shared_dir / "data" / "kz_celeb25" / split
    data = RecordIODataset(root / f"{split}.rec")
    folders = IdentityFolderDataset(root)
    assert len(data) == count == len(folders)
    assert data.num_classes == 25 and sorted(set(data.labels.tolist())) == list(range(25))
    assert Counter(data.labels.tolist()) == Counter(folders.labels.tolist())
    # The .lst beside the .rec names the source file of every key; its label must be that folder's index
    # and its pixels the record's (the .rec holds a JPEG re-encoding, so compare decoded pixels).
    lines = (root / f"{split}.lst").read_text().splitlines()
    lst = {int(key): path for key, _, path in (line.split("\t") for line in lines)}
    for i, key in enumerate(data.reader.image_keys):
        identity = lst[key].split("/")[0]
        assert folders.class_names[data.labels[i]] == identity
        original = np.asarray(Image.open(root / lst[key]).convert("RGB"), dtype=np.float32)
        assert np.abs(data.load_image(i).astype(np.float32) - original).mean() < 3.0
    image, label = data[0]
    assert image.shape == (3, 112, 112) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0 and label == data.labels[0]


def test_real_rec_in_dataloader_workers(shared_dir):
    data = RecordIODataset(shared_dir / "data" / "kz_celeb25" / "testing" / "testing.rec")
    subset = torch.utils.data.Subset(data, range(24))
    single = [label for _, label in subset]
    data.reader.read(data.reader.image_keys[0])  # open the handle in the parent: workers must not share it
    loader = torch.utils.data.DataLoader(subset, batch_size=4, num_workers=2)
    assert torch.cat([labels for _, labels in loader]).tolist() == single
    clone = pickle.loads(pickle.dumps(data.reader))  # spawn-style workers get a pickled copy
    assert clone.read(clone.image_keys[3]) == data.reader.read(data.reader.image_keys[3])


def _write(path, payloads: dict[int, bytes]):
    with RecordIOWriter(path) as writer:
        for key, payload in payloads.items():
            writer.write(key, payload)
    return path


def test_round_trip_byte_identical_with_multipart(tmp_path, image_bytes):
    images = [image_bytes(i) for i in range(4)]
    # Payloads with the magic number at 4-byte-aligned positions must become multi-part records.
    payloads = {i: pack_payload(float(i), img) for i, img in enumerate(images)}
    payloads[4] = pack_payload(4.0, MAGIC_BYTES + b"abcd" + MAGIC_BYTES * 2 + b"xyz")
    payloads[5] = pack_payload([5.0, 1.0], images[0] + b"\0" * (-len(images[0]) % 4) + MAGIC_BYTES)
    rec = _write(tmp_path / "t.rec", payloads)
    raw = rec.read_bytes()
    flags = Counter()
    pos = 0
    while pos < len(raw):
        magic, lrec = struct.unpack_from("<II", raw, pos)
        flags[lrec >> 29] += 1
        pos += 8 + (lrec & (2**29 - 1)) + (-(lrec & (2**29 - 1)) % 4)
    assert flags[1] == 2 and flags[2] == 2 and flags[3] == 2
    for reader in (RecordIOReader(rec), RecordIOReader(rec, tmp_path / "t.idx")):
        assert [reader.read(k) for k in range(6)] == [payloads[k] for k in range(6)]
        assert [reader.read_record(k)[1] for k in range(4)] == images
        assert reader.read_header(5).labels == (5.0, 1.0)
    (tmp_path / "t.idx").unlink()
    scanned = RecordIOReader(rec)  # no .idx: one sequential scan, keys in file order
    assert [scanned.read(k) for k in scanned.keys] == [payloads[k] for k in range(6)]


def test_framing_matches_dmlc_core():
    # dmlc-core: cut at the aligned magic, drop it, cflag 1 then 3, pad only the whole record to 4 bytes.
    expected = (MAGIC_BYTES + struct.pack("<I", 1 << 29 | 4) + b"abcd"
                + MAGIC_BYTES + struct.pack("<I", 3 << 29 | 3) + b"efg" + b"\0")
    assert frame(b"abcd" + MAGIC_BYTES + b"efg") == expected
    assert frame(b"ab" + MAGIC_BYTES + b"ef") == MAGIC_BYTES + struct.pack("<I", 8) + b"ab" + MAGIC_BYTES + b"ef"


def test_ms1m_header_record(tmp_path, image_bytes):
    with RecordIOWriter(tmp_path / "train.rec") as writer:
        writer.write_header_record(3)
        for key, label in zip((1, 2, 3), (0, 1, 1)):
            writer.write_image(key, image_bytes(key, size=8), label)
        writer.write_property(2, 8, 8)
    reader = RecordIOReader(tmp_path / "train.rec")
    assert reader.keys == [0, 1, 2, 3] and reader.image_keys == [1, 2, 3]
    assert reader.read_header(0).labels == (4.0, 4.0)
    data = RecordIODataset(tmp_path / "train.rec", size=8)
    assert len(data) == 3 and data.labels.tolist() == [0, 1, 1] and data.num_classes == 2
    assert (tmp_path / "property").read_text().strip() == "2,8,8"
    assert data.load_image(0).shape == (8, 8, 3) and data.reader.read_record(2)[0].id == 2

    with RecordIOWriter(tmp_path / "short.rec") as writer:
        writer.write_header_record(5)  # claims keys 1..5 but only one image follows
        writer.write_image(1, image_bytes(1), 0)
    with pytest.raises(DataFormatError, match=r"short\.rec: header record 0 says images are keys 1\.\.5 but only 1 "):
        RecordIOReader(tmp_path / "short.rec")


@pytest.fixture
def three_records(tmp_path, image_bytes):
    payloads = {k: pack_payload(float(k), image_bytes(k)) for k in range(3)}
    rec = _write(tmp_path / "c.rec", payloads)
    offsets = [int(line.split("\t")[1]) for line in (tmp_path / "c.idx").read_text().splitlines()]
    return rec, payloads, offsets


def test_truncated_rec(three_records):
    rec, payloads, offsets = three_records
    rec.write_bytes(rec.read_bytes()[: offsets[2] + 40])
    reader = RecordIOReader(rec)
    assert reader.read(1) == payloads[1]
    with pytest.raises(DataFormatError, match=r"c\.rec: record 2 .*offset %d.*truncated" % offsets[2]):
        reader.read(2)
    rec.write_bytes(rec.read_bytes()[: offsets[2] + 5])
    with pytest.raises(DataFormatError, match=r"c\.rec: record 2 .*truncated"):
        RecordIOReader(rec).read(2)


def test_bad_magic(three_records):
    rec, _, offsets = three_records
    raw = bytearray(rec.read_bytes())
    raw[offsets[1]] ^= 0xFF
    rec.write_bytes(bytes(raw))
    with pytest.raises(DataFormatError, match=r"c\.rec: record 1 \(part at offset %d\): bad magic" % offsets[1]):
        RecordIOReader(rec).read(1)


def test_wrong_length(three_records):
    rec, payloads, offsets = three_records
    raw = bytearray(rec.read_bytes())
    struct.pack_into("<I", raw, offsets[1] + 4, offsets[2] - offsets[1])  # 8 bytes too long
    struct.pack_into("<I", raw, offsets[2] + 4, 2**29 - 1)  # past the end of the file
    rec.write_bytes(bytes(raw))
    reader = RecordIOReader(rec)
    assert reader.read(0) == payloads[0]
    match = r"c\.rec: record 1 .*wrong length .*next record at offset %d" % offsets[2]
    with pytest.raises(DataFormatError, match=match):
        reader.read(1)
    with pytest.raises(DataFormatError, match=r"c\.rec: record 2 .*runs past the end of the file"):
        reader.read(2)


def test_bad_idx_and_bad_image(three_records, tmp_path):
    rec, _, offsets = three_records
    idx = tmp_path / "c.idx"
    idx.write_text(f"0\t{offsets[0]}\n1\toops\n")
    with pytest.raises(DataFormatError, match=r"c\.idx:2: expected 'key<TAB>offset'"):
        RecordIOReader(rec)
    with RecordIOWriter(tmp_path / "img.rec") as writer:
        writer.write_image(0, b"\x89PNG not really", 0)
    with pytest.raises(DataFormatError, match=r"img\.rec: record 0 \(offset 0\): cannot decode image"):
        RecordIOReader(tmp_path / "img.rec").read_image(0)
