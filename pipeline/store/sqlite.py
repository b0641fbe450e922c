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
import dataclasses
import datetime as dt
import json
import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from pipeline.data.schema import N_RESTAURANT_FEATURES, N_USER_FEATURES
from pipeline.data.shrink import ShrinkGuard
from pipeline.publish import DEFAULT_LOCK_TIMEOUT_S, Rejected, file_lock
from pipeline.store.base import (
    DEFAULT_WRITE_TIMEOUT_S,
    LOAD_BATCH,
    FeaturesNotLoaded,
    FeatureTable,
    Fetched,
    StoreUnavailable,
    StoreVersion,
    audit_loaded,
    decode,
    encode,
    refuse_shrink,
    validate_tables,
)

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
_VERSION_COLUMNS = "v, users_version, restaurants_version, users_rows, restaurants_rows, state, created_at, previous"


class SQLiteStore:
    """Feature store in one SQLite file; one connection per thread. ``timeout_s`` bounds how
    long a statement waits for a lock."""

    def __init__(self, path: str | Path, user_width: int = N_USER_FEATURES,
                 restaurant_width: int = N_RESTAURANT_FEATURES,
                 timeout_s: float = DEFAULT_WRITE_TIMEOUT_S):
        self.path = Path(path)
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

    def fetch(self, user_id: int, restaurant_ids: Sequence[int]) -> Fetched:
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

    async def fetch_async(self, user_id: int, restaurant_ids: Sequence[int]) -> Fetched:
        """``fetch`` on a worker thread: SQLite has no asynchronous interface."""
        return await asyncio.to_thread(self.fetch, user_id, restaurant_ids)

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

    def _drop_version(self, connection: sqlite3.Connection, version: int) -> None:
        connection.execute("BEGIN")
        for table in _TABLE.values():
            connection.execute(f"DELETE FROM {table} WHERE v = ?", (version,))
        connection.execute("DELETE FROM feature_versions WHERE v = ?", (version,))
        connection.execute("COMMIT")

    def _lock(self, timeout_s: float, on_wait):
        return file_lock(self.path.with_name(f".{self.path.name}.lock"), timeout_s, f"online store {self.path}",
                         on_wait)

    def publish(self, users: FeatureTable, restaurants: FeatureTable,
                on_wait: Callable[[str], None] | None = None,
                lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S, guard: ShrinkGuard | None = None) -> StoreVersion:
        validate_tables(self, users, restaurants)
        guard = guard or ShrinkGuard()
        with self._lock(lock_timeout_s, on_wait):
            connection = self._connection(create=True)
            connection.executescript(_DROP_UNVERSIONED)
            for leftover in self._versions("WHERE state = 'loading'"):  # a killed loader's partial version
                self._drop_version(connection, leftover.number)
            live = self.live()
            not_shrunk = refuse_shrink(str(self.path), guard, live, users, restaurants)
            number = (max((v.number for v in self._versions()), default=0)) + 1
            connection.execute(
                f"INSERT INTO feature_versions ({_VERSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, 'loading', ?, ?)",
                (number, users.version, restaurants.version, len(users.ids), len(restaurants.ids),
                 dt.datetime.now(dt.UTC).isoformat(), live.number if live else None))
            try:
                for kind, table in (("users", users), ("restaurants", restaurants)):
                    insert = f"INSERT INTO {_TABLE[kind]}(v, id, f) VALUES (?, ?, ?)"
                    for start in range(0, len(table.ids), LOAD_BATCH * 5):
                        end = start + LOAD_BATCH * 5
                        ids = table.ids[start:end].tolist()
                        connection.execute("BEGIN")
                        connection.executemany(insert, zip([number] * len(ids), ids,
                                                           encode(table.values[start:end]), strict=True))
                        connection.execute("COMMIT")
                audits = [*audit_loaded(lambda kind, ids: self._read_back(number, kind, ids), users, restaurants),
                          not_shrunk]
                if not all(a.passed for a in audits):
                    raise Rejected(self.path, audits)
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                self._drop_version(connection, number)
                raise
            connection.execute("BEGIN")
            connection.execute("UPDATE feature_versions SET state = 'complete' WHERE v = ?", (number,))
            connection.execute("INSERT INTO live_version(id, v) VALUES (0, ?) "
                               "ON CONFLICT(id) DO UPDATE SET v = excluded.v", (number,))
            connection.execute("COMMIT")
            for old in self._versions("WHERE v NOT IN (?, ?)", (number, live.number if live else number)):
                self._drop_version(connection, old.number)
            return dataclasses.replace(self.live(), audits=tuple(audits))

    def _read_back(self, number: int, kind: str, ids: np.ndarray) -> tuple[int, list[bytes | None]]:
        connection = self._connection()
        table = _TABLE[kind]
        stored = connection.execute(f"SELECT count(*) FROM {table} WHERE v = ?", (number,)).fetchone()[0]
        blobs = [connection.execute(f"SELECT f FROM {table} WHERE v = ? AND id = ?", (number, int(i))).fetchone()
                 for i in ids]
        return stored, [b[0] if b else None for b in blobs]

    def rollback(self, lock_timeout_s: float = 60.0) -> tuple[int, int]:
        with self._lock(lock_timeout_s, None):
            live = self.live()
            if live is None or live.previous is None or not self._versions("WHERE v = ? AND state = 'complete'",
                                                                           (live.previous,)):
                raise FileNotFoundError(f"online store {self.path}: no previous version is kept to roll back to")
            self._connection(create=True).execute("UPDATE live_version SET v = ? WHERE id = 0", (live.previous,))
            return live.number, live.previous

    async def close_async(self) -> None:
        pass  # the worker threads' connections close with their threads

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None
