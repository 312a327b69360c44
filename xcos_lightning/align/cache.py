"""On-disk cache of detected faces, keyed by the photo's content and the detector's settings.

One SQLite file (``landmarks.sqlite``) under ``XCOS_CACHE_DIR``, else ``$XDG_CACHE_HOME/xcos_lightning``, else
``~/.cache/xcos_lightning`` (data folders may be read-only). SQLite makes concurrent writers from several
processes safe; a file that is not a readable database is moved aside, warned about and rebuilt. A changed
photo has another content hash, so it is detected again.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
import warnings
from pathlib import Path

from xcos_lightning.align.detectors import Face

CACHE_FILE = "landmarks.sqlite"


def default_cache_dir() -> Path:
    if os.environ.get("XCOS_CACHE_DIR"):
        return Path(os.environ["XCOS_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "xcos_lightning"


def content_key(data: bytes) -> str:
    """Hex digest naming a photo by its bytes (a renamed copy hits, an edited file misses)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class LandmarkCache:
    """``get_many(keys, detector_key) -> {key: [Face, ...]}`` and ``put_many``; ``folder=None`` = the default."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.path = Path(folder or default_cache_dir()) / CACHE_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            aside = self.path.with_name(f"{CACHE_FILE}.corrupt-{int(time.time())}")
            os.replace(self.path, aside)
            warnings.warn(f"landmark cache {self.path} was unreadable ({exc}); moved to {aside.name} and rebuilt",
                          RuntimeWarning, stacklevel=2)
            self._open()

    def _open(self) -> None:
        # timeout: a second process filling the cache waits for the writer's lock instead of failing
        self.db = sqlite3.connect(self.path, timeout=60)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS faces (key TEXT, detector TEXT, faces TEXT, "
                        "PRIMARY KEY (key, detector))")
        self.db.execute("SELECT count(*) FROM faces").fetchone()  # reads a page: a corrupt file fails here

    def get_many(self, keys: list[str], detector_key: str) -> dict[str, list[Face]]:
        found: dict[str, list[Face]] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):  # SQLite's bound-parameter limit
            chunk = unique[start:start + 500]
            rows = self.db.execute(f"SELECT key, faces FROM faces WHERE detector = ? AND key IN "
                                   f"({','.join('?' * len(chunk))})", (detector_key, *chunk))
            for key, text in rows:
                found[key] = [Face.from_json(f) for f in json.loads(text)]
        return found

    def put_many(self, items: dict[str, list[Face]], detector_key: str) -> None:
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO faces VALUES (?, ?, ?)",
                                [(k, detector_key, json.dumps([f.to_json() for f in faces]))
                                 for k, faces in items.items()])

    def close(self) -> None:
        self.db.close()
