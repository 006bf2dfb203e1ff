"""A persistent completion cache: a resumed or repeated run pays for no teacher call twice.

SQLite in WAL mode: several processes (distributed ranks, two runs sharing a cache) can read and write one file
safely; a write that loses a race is ignored (``INSERT OR IGNORE``), since both writers hold an answer to the same
request. Keys are SHA-256 digests of the request as sent minus credentials: endpoint URL, model, prompt or
messages, and every sampling parameter, so a change of any of them is a new key.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path


def cache_key(url: str, payload: dict) -> str:
    """Digest of the endpoint and the request body (which holds model, prompt and sampling parameters)."""
    blob = json.dumps({"url": url, "payload": payload}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class CompletionCache:
    """``key -> completion record`` (a JSON object), shared by threads and processes."""

    def __init__(self, path: str | Path, timeout: float = 60.0) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=timeout, check_same_thread=False)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("CREATE TABLE IF NOT EXISTS completions (key TEXT PRIMARY KEY, record TEXT NOT NULL)")
                self._db.commit()
                return
            except sqlite3.DatabaseError as error:
                # switching a new file to WAL while another process does the same can fail at once, without
                # SQLite's busy wait ("database is locked", found with 6 processes opening one new cache): retry
                if "locked" in str(error) and time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                raise ValueError(f"{self.path}: not a usable teacher cache ({error}); move it away or point "
                                 "cache_path elsewhere") from error

    def get(self, key: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT record FROM completions WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, record: dict) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO completions (key, record) VALUES (?, ?)", (key, json.dumps(record)))
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM completions").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
