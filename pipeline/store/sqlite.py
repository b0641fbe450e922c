"""SQLite online store: an embedded file in WAL mode (readers never block the loader).

Every version's rows live in two WITHOUT ROWID tables keyed by (version, id); the table
``live_version`` names the live one. A read is one statement (one consistent snapshot) that
looks up the live version and the user and restaurants of that version together.

Readers follow the file, not an open handle: every read checks which file is at the path
(device and inode, one ``stat``), so a deleted file reads as "features not loaded" instead of
serving the deleted copy forever, and a replaced file is reopened. Only a loader creates it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from pipeline.data.schema import N_RESTAURANT_FEATURES, N_USER_FEATURES
from pipeline.data.shrink import ShrinkGuard
from pipeline.locks import DEFAULT_LOCK_TIMEOUT_S, file_lock
from pipeline.store.base import (
    DEFAULT_WRITE_TIMEOUT_S,
    LOAD_BATCH,
    FeaturesNotLoaded,
    FeatureTable,
    Fetched,
    StoreUnavailable,
    StoreVersion,
    UserRead,
    decode,
    encode,
    joined_rows,
)
from pipeline.store.versioned import load_version, rollback_version

_SCHEMA = """
CREATE TABLE IF NOT EXISTS user_features (v INTEGER NOT NULL, id INTEGER NOT NULL, f BLOB NOT NULL,
                                          PRIMARY KEY (v, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS restaurant_features (v INTEGER NOT NULL, id INTEGER NOT NULL, f BLOB NOT NULL,
                                                PRIMARY KEY (v, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS feature_versions (v INTEGER PRIMARY KEY, users_version TEXT NOT NULL,
    restaurants_version TEXT NOT NULL, users_rows INTEGER NOT NULL, restaurants_rows INTEGER NOT NULL,
    state TEXT NOT NULL, created_at TEXT NOT NULL, previous INTEGER);
CREATE TABLE IF NOT EXISTS live_version (id INTEGER PRIMARY KEY CHECK (id = 0), v INTEGER NOT NULL);
"""
# The tables of the unversioned store this one replaces (the file is a cache of the warehouse).
_DROP_UNVERSIONED = "DROP TABLE IF EXISTS users; DROP TABLE IF EXISTS restaurants; DROP TABLE IF EXISTS meta;"
_TABLE = {"users": "user_features", "restaurants": "restaurant_features"}
# One statement, whatever the number of restaurants: ids travel as one JSON array; the live
# version is looked up in the same statement (one snapshot), so all rows come from one version.
# CROSS JOIN keeps json_each as the outer loop, so every restaurant is one (version, id) key
# lookup; the version subquery is constant, evaluated once per statement.
_LIVE = "(SELECT v FROM live_version WHERE id = 0)"
_FETCH = f"""
SELECT 2, v, NULL FROM live_version WHERE id = 0
UNION ALL
SELECT 0, id, f FROM user_features WHERE v = {_LIVE} AND id = ?
UNION ALL
SELECT 1, r.id, r.f FROM json_each(?) AS j CROSS JOIN restaurant_features AS r ON r.v = {_LIVE} AND r.id = j.value
"""
# The user and the live version's restaurant snapshot, for a reader that holds the restaurants.
_FETCH_USER = """
SELECT l.v, fv.restaurants_version, (SELECT f FROM user_features WHERE v = l.v AND id = ?)
FROM live_version AS l JOIN feature_versions AS fv ON fv.v = l.v WHERE l.id = 0
"""
# One statement, one snapshot: a version's restaurants and how many it was loaded with.
_RESTAURANTS = """
SELECT r.id, r.f, fv.restaurants_version, fv.restaurants_rows
FROM feature_versions AS fv JOIN restaurant_features AS r ON r.v = fv.v WHERE fv.v = ?
"""
_VERSION_COLUMNS = "v, users_version, restaurants_version, users_rows, restaurants_rows, state, created_at, previous"


class SQLiteStore:
    """Feature store in one SQLite file; one connection per thread. ``timeout_s`` bounds how
    long a statement waits for a lock."""

    def __init__(self, path: str | Path, user_width: int = N_USER_FEATURES,
                 restaurant_width: int = N_RESTAURANT_FEATURES,
                 timeout_s: float = DEFAULT_WRITE_TIMEOUT_S):
        self.path = Path(path)
        self.name = str(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.user_width, self.restaurant_width, self.timeout_s = user_width, restaurant_width, timeout_s
        self._local = threading.local()

    def _connection(self, create: bool = False) -> sqlite3.Connection:
        """This thread's connection to the file now at the path; a loader (``create``) makes the
        file and schema, a reader never does (a missing file is :class:`FeaturesNotLoaded`)."""
        try:
            stat = os.stat(self.path)
            identity = (stat.st_dev, stat.st_ino)
        except FileNotFoundError:
            if not create:
                self.close()
                raise FeaturesNotLoaded(f"{self.path} does not exist (deleted, or never loaded)") from None
            identity = None
        connection = getattr(self._local, "connection", None)
        if connection is not None and self._local.identity != identity:  # deleted or replaced: reopen
            self.close()
            connection = None
        if connection is None:
            target = str(self.path) if create else f"file:{urllib.parse.quote(str(self.path))}?mode=rw"
            connection = sqlite3.connect(target, uri=not create, isolation_level=None, timeout=self.timeout_s,
                                         check_same_thread=False)
            connection.execute("PRAGMA synchronous=NORMAL")
            stat = os.stat(self.path)
            self._local.connection, self._local.identity = connection, (stat.st_dev, stat.st_ino)
        if create:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.executescript(_SCHEMA)
        return connection

    def _read(self, statement: str, args: tuple = ()) -> list[tuple]:
        """Run a read statement; a file that is not a loaded feature store reads as not loaded."""
        try:
            return self._connection().execute(statement, args).fetchall()
        except sqlite3.OperationalError as error:
            if "no such table" in str(error):
                raise FeaturesNotLoaded(f"{self.path} holds no feature tables ({error})") from None
            raise StoreUnavailable(f"sqlite {self.path}: {error}") from error
        except sqlite3.DatabaseError as error:
            raise FeaturesNotLoaded(f"{self.path} is not a feature store ({error})") from None

    def fetch(self, user_id: int, restaurant_ids: Iterable[int]) -> Fetched:
        ids = [int(i) for i in restaurant_ids]
        rows = self._read(_FETCH, (int(user_id), json.dumps(ids)))
        version = next((rid for kind, rid, _ in rows if kind == 2), None)
        if version is None:
            raise FeaturesNotLoaded(f"no feature version is live in {self.path}")
        user = next((decode([f], self.user_width)[0] for kind, _, f in rows if kind == 0), None)
        found_blobs = {rid: f for kind, rid, f in rows if kind == 1}
        found = np.fromiter((i in found_blobs for i in ids), dtype=bool, count=len(ids))
        return Fetched(user, decode([found_blobs[i] for i in ids if i in found_blobs], self.restaurant_width),
                       found, version)

    async def fetch_async(self, user_id: int, restaurant_ids: Iterable[int]) -> Fetched:
        """``fetch`` on a worker thread: SQLite has no asynchronous interface."""
        return await asyncio.to_thread(self.fetch, user_id, restaurant_ids)

    def fetch_user(self, user_id: int) -> UserRead:
        rows = self._read(_FETCH_USER, (int(user_id),))
        if not rows:
            raise FeaturesNotLoaded(f"no feature version is live in {self.path}")
        version, restaurants_version, blob = rows[0]
        return UserRead(decode([blob], self.user_width)[0] if blob is not None else None, version,
                        restaurants_version)

    async def fetch_user_async(self, user_id: int) -> UserRead:
        return await asyncio.to_thread(self.fetch_user, user_id)

    def restaurant_features(self, number: int) -> FeatureTable:
        """One statement (one snapshot), fetched in slices, each turned into arrays before the
        next (a reader's Python objects stay few)."""
        slices, snapshot, expected = [], "", -1
        try:
            cursor = self._connection().execute(_RESTAURANTS, (int(number),))
            while part := cursor.fetchmany(LOAD_BATCH):
                snapshot, expected = part[0][2], part[0][3]
                slices.append((np.fromiter((r[0] for r in part), np.int64, len(part)),
                               decode([r[1] for r in part], self.restaurant_width)))
        except sqlite3.DatabaseError as error:
            raise FeaturesNotLoaded(f"{self.path}: restaurants of version {number} unreadable ({error})") from None
        table = joined_rows(slices, self.restaurant_width, snapshot)
        if len(table.ids) != expected:
            raise FeaturesNotLoaded(f"version {number} of {self.path} is gone or incomplete "
                                    f"({len(table.ids)} restaurants read)")
        return table

    # ----- versions

    def _versions(self, where: str = "", args: tuple = ()) -> list[StoreVersion]:
        rows = self._read(f"SELECT {_VERSION_COLUMNS} FROM feature_versions {where} ORDER BY v", args)
        return [StoreVersion(*row) for row in rows]

    def versions(self) -> list[StoreVersion]:
        try:
            return self._versions()
        except FeaturesNotLoaded:
            return []

    def live(self) -> StoreVersion | None:
        try:
            found = self._versions("WHERE v = (SELECT v FROM live_version WHERE id = 0)")
        except FeaturesNotLoaded:
            return None
        return found[0] if found else None

    # ----- the primitives of the versioned load (pipeline/store/versioned.py)

    @property
    def write_batch(self) -> int:
        return LOAD_BATCH * 5

    @contextlib.contextmanager
    def writer_lock(self, timeout_s: float, on_wait: Callable[[str], None] | None) -> Iterator[Callable[[], None]]:
        """A file lock beside the database; the kernel releases it when the loader dies."""
        with file_lock(self.path.with_name(f".{self.path.name}.lock"), timeout_s, f"online store {self.path}",
                       on_wait):
            yield lambda: None

    def prepare_load(self) -> None:
        self._connection(create=True).executescript(_DROP_UNVERSIONED)

    def create_version(self, users: FeatureTable, restaurants: FeatureTable, created_at: str,
                       previous: int | None) -> int:
        number = max((v.number for v in self._versions()), default=0) + 1
        self._connection(create=True).execute(
            f"INSERT INTO feature_versions ({_VERSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, 'loading', ?, ?)",
            (number, users.version, restaurants.version, len(users.ids), len(restaurants.ids), created_at, previous))
        return number

    def write_rows(self, number: int, kind: str, ids: np.ndarray, values: np.ndarray) -> None:
        connection = self._connection(create=True)
        rows = ids.tolist()
        connection.execute("BEGIN")
        connection.executemany(f"INSERT INTO {_TABLE[kind]}(v, id, f) VALUES (?, ?, ?)",
                               zip([number] * len(rows), rows, encode(values), strict=True))
        connection.execute("COMMIT")

    def read_back(self, number: int, kind: str, ids: np.ndarray) -> tuple[int, list[bytes | None]]:
        connection = self._connection()
        table = _TABLE[kind]
        stored = connection.execute(f"SELECT count(*) FROM {table} WHERE v = ?", (number,)).fetchone()[0]
        blobs = [connection.execute(f"SELECT f FROM {table} WHERE v = ? AND id = ?", (number, int(i))).fetchone()
                 for i in ids]
        return stored, [b[0] if b else None for b in blobs]

    def complete_and_switch(self, number: int) -> None:
        """One transaction: a reader sees the old live version or the new complete one."""
        connection = self._connection(create=True)
        connection.execute("BEGIN")
        connection.execute("UPDATE feature_versions SET state = 'complete' WHERE v = ?", (number,))
        connection.execute("INSERT INTO live_version(id, v) VALUES (0, ?) "
                           "ON CONFLICT(id) DO UPDATE SET v = excluded.v", (number,))
        connection.execute("COMMIT")

    def switch(self, number: int) -> None:
        self._connection(create=True).execute("UPDATE live_version SET v = ? WHERE id = 0", (number,))

    def drop_version(self, number: int) -> None:
        connection = self._connection(create=True)
        if connection.in_transaction:  # a write interrupted mid-batch
            connection.execute("ROLLBACK")
        connection.execute("BEGIN")
        for table in _TABLE.values():
            connection.execute(f"DELETE FROM {table} WHERE v = ?", (number,))
        connection.execute("DELETE FROM feature_versions WHERE v = ?", (number,))
        connection.execute("COMMIT")

    def publish(self, users: FeatureTable, restaurants: FeatureTable,
                on_wait: Callable[[str], None] | None = None, guard: ShrinkGuard | None = None,
                *, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> StoreVersion:
        return load_version(self, users, restaurants, on_wait, lock_timeout_s, guard)

    def rollback(self, lock_timeout_s: float = 60.0) -> tuple[int, int]:
        return rollback_version(self, lock_timeout_s)

    async def close_async(self) -> None:
        pass  # the worker threads' connections close with their threads

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None
