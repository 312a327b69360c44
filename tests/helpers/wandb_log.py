"""Reads an offline W&B run's transaction log (``run-<id>.wandb``), the file ``wandb sync`` uploads.

Recent wandb releases write ``files/config.yaml`` and ``wandb-summary.json`` only when a run is synced,
so tests check what an offline run holds by reading the log itself: a LevelDB-style log (header
``:W&B`` + magic 0xBEE1 + version 0, then 32 KiB blocks of chunks ``crc32 u32, length u16, type u8``;
type 1 = a whole record, 2/3/4 = first/middle/last part) of ``wandb_internal_pb2.Record`` protobufs.
"""
from __future__ import annotations

import json
import struct
from collections import defaultdict
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32768
HEADER = struct.Struct("<4sHB")
CHUNK = struct.Struct("<IHB")


def records(path: Path) -> list[wandb_internal_pb2.Record]:
    """Every record of the log at ``path``, in order."""
    data = Path(path).read_bytes()
    ident, magic, version = HEADER.unpack_from(data)
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), f"{path} is not a W&B transaction log"
    out, parts, pos = [], [], HEADER.size
    while pos + CHUNK.size <= len(data):
        room = BLOCK - pos % BLOCK
        if room < CHUNK.size:  # a block's tail too short for a chunk header is zero padding
            pos += room
            continue
        _, length, kind = CHUNK.unpack_from(data, pos)
        if kind == 0:
            break
        parts.append(data[pos + CHUNK.size:pos + CHUNK.size + length])
        pos += CHUNK.size + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            out.append(record)
            parts = []
    return out


class RunLog:
    """What an offline run logged: ``config`` (dict), ``history`` (key -> list of values), ``rows`` (one
    dict per logged history row, in order), ``files``.

    Media are history values too: an image list under ``key`` appears as ``key/_type`` =
    ``"images/separated"`` and ``key/filenames``, a single image as ``key/_type`` = ``"image-file"``, a
    Table as ``key/_type`` = ``"table-file"`` with ``key/path``; ``files`` lists the run-relative paths of
    the files saved with the run (media included), which lie under ``<run_dir>/files``.
    """

    def __init__(self, run_dir: Path) -> None:
        (log,) = Path(run_dir).glob("run-*.wandb")
        self.records = records(log)
        self.config: dict = {}
        self.history: dict[str, list] = defaultdict(list)
        self.exit_code: int | None = None
        self.rows: list[dict] = []
        self.files: list[str] = []
        for record in self.records:
            kind = record.WhichOneof("record_type")
            if kind == "config":
                for item in record.config.update:
                    self.config[item.key] = json.loads(item.value_json)
            elif kind == "history":
                row = {}
                for item in record.history.item:
                    key = item.key or "/".join(item.nested_key)
                    row[key] = json.loads(item.value_json)
                    self.history[key].append(row[key])
                self.rows.append(row)
            elif kind == "files":
                self.files.extend(item.path for item in record.files.files)
            elif kind == "exit":
                self.exit_code = record.exit.exit_code
