"""SQLite online store: an embedded file in WAL mode (readers never block the loader)."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.store.base import KINDS, LOAD_BATCH, Fetched, decode, encode

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, f BLOB NOT NULL, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS restaurants (id INTEGER PRIMARY KEY, f BLOB NOT NULL, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (kind TEXT PRIMARY KEY, version TEXT NOT NULL);
"""
# One statement, whatever the number of restaurants: ids travel as one JSON array.
_FETCH = """
SELECT 0, id, f FROM users WHERE id = ?
UNION ALL
SELECT 1, r.id, r.f FROM json_each(?) AS j JOIN restaurants AS r ON r.id = j.value
"""


class SQLiteStore:
    """Feature store in one SQLite file; one connection per thread."""

    def __init__(self, path: str | Path, user_width: int = 30, restaurant_width: int = 10):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.user_width, self.restaurant_width = user_width, restaurant_width
        self._local = threading.local()
        connection = self._connection()
        connection.executescript(_SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            self._local.connection = connection
        return connection

    def fetch(self, user_id: int, restaurant_ids: Sequence[int]) -> Fetched:
        ids = [int(i) for i in restaurant_ids]
        rows = self._connection().execute(_FETCH, (int(user_id), json.dumps(ids))).fetchall()
        user = next((decode([f], self.user_width)[0] for kind, _, f in rows if kind == 0), None)
        found_blobs = {rid: f for kind, rid, f in rows if kind == 1}
        found = np.fromiter((i in found_blobs for i in ids), dtype=bool, count=len(ids))
        return Fetched(user, decode([found_blobs[i] for i in ids if i in found_blobs], self.restaurant_width), found)

    def load(self, kind: str, ids: np.ndarray, values: np.ndarray, version: str) -> int:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        connection = self._connection()
        upsert = (f"INSERT INTO {kind}(id, f, v) VALUES (?, ?, ?) "
                  f"ON CONFLICT(id) DO UPDATE SET f = excluded.f, v = excluded.v")
        for start in range(0, len(ids), LOAD_BATCH * 5):
            end = start + LOAD_BATCH * 5
            batch = zip(ids[start:end].tolist(), encode(values[start:end]), [version] * (end - start), strict=False)
            connection.execute("BEGIN")
            connection.executemany(upsert, batch)
            connection.execute("COMMIT")
        connection.execute("BEGIN")
        connection.execute(f"DELETE FROM {kind} WHERE v != ?", (version,))
        connection.execute("INSERT INTO meta(kind, version) VALUES (?, ?) "
                           "ON CONFLICT(kind) DO UPDATE SET version = excluded.version", (kind, version))
        connection.execute("COMMIT")
        return len(ids)

    def version(self, kind: str) -> str | None:
        row = self._connection().execute("SELECT version FROM meta WHERE kind = ?", (kind,)).fetchone()
        return row[0] if row else None

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None
