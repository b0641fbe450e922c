"""The versioned load and the rollback, written once over the primitives each store implements.

A load, under the store's writer lock: drop the versions a killed loader left ``loading``; refuse
the load if the shrink rule forbids it against the live version; record a new version as
``loading``; write both tables in batches (renewing the lock between batches); audit what reads
back; mark the version complete and make it live; drop every version but the new and the
previous live one. A failed write or audit drops the new version (the previous stays live).
A rollback makes the live version's previous one live again, if it is still kept and complete.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Protocol

import numpy as np

from pipeline.audits import Rejected
from pipeline.data.shrink import ShrinkGuard
from pipeline.store.base import FeatureTable, StoreVersion, audit_loaded, refuse_shrink, validate_tables


class VersionedBackend(Protocol):
    """What a store provides for :func:`load_version` and :func:`rollback_version`."""

    name: str                 # how messages name the store (a path, or a URL with its password masked)
    user_width: int
    restaurant_width: int

    @property
    def write_batch(self) -> int:
        """Rows written per :meth:`write_rows` call."""

    def writer_lock(self, timeout_s: float,
                    on_wait: Callable[[str], None] | None) -> AbstractContextManager[Callable[[], None]]:
        """Hold the one-loader lock (``LockTimeout`` after ``timeout_s``); yields a function that
        renews it, called between batches."""

    def prepare_load(self) -> None:
        """Make the store ready to be written (create what a first load needs)."""

    def versions(self) -> list[StoreVersion]: ...

    def live(self) -> StoreVersion | None: ...

    def create_version(self, users: FeatureTable, restaurants: FeatureTable, created_at: str,
                       previous: int | None) -> int:
        """Record a new version in state ``loading``; its number, higher than every earlier one."""

    def write_rows(self, number: int, kind: str, ids: np.ndarray, values: np.ndarray) -> None:
        """Write one batch of ``kind`` (users or restaurants) rows into version ``number``."""

    def read_back(self, number: int, kind: str, ids: np.ndarray) -> tuple[int, list[bytes | None]]:
        """(rows of ``kind`` stored in version ``number``, the stored bytes of ``ids``)."""

    def complete_and_switch(self, number: int) -> None:
        """Mark version ``number`` complete and make it the live one."""

    def switch(self, number: int) -> None:
        """Make the (complete) version ``number`` the live one."""

    def drop_version(self, number: int) -> None:
        """Remove version ``number`` and its rows."""


def _batches(table: FeatureTable, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for start in range(0, len(table.ids), size):
        yield table.ids[start:start + size], table.values[start:start + size]


def load_version(store: VersionedBackend, users: FeatureTable, restaurants: FeatureTable,
                 on_wait: Callable[[str], None] | None, lock_timeout_s: float,
                 guard: ShrinkGuard | None) -> StoreVersion:
    """Load, audit and make live a new version of ``store``; :class:`Rejected` when the shrink
    rule (``guard``, default the configured one) or the audit refuses it."""
    validate_tables(store, users, restaurants)
    guard = guard or ShrinkGuard()
    with store.writer_lock(lock_timeout_s, on_wait) as renew_lock:
        store.prepare_load()
        for leftover in store.versions():
            if leftover.state == "loading":  # a killed loader's partial version
                store.drop_version(leftover.number)
        live = store.live()
        not_shrunk = refuse_shrink(store.name, guard, live, users, restaurants)
        number = store.create_version(users, restaurants, dt.datetime.now(dt.UTC).isoformat(),
                                      live.number if live else None)
        try:
            for kind, table in (("users", users), ("restaurants", restaurants)):
                for ids, values in _batches(table, store.write_batch):
                    store.write_rows(number, kind, ids, values)
                    renew_lock()
            audits = [*audit_loaded(lambda kind, ids: store.read_back(number, kind, ids), users, restaurants),
                      not_shrunk]
            if not all(a.passed for a in audits):
                raise Rejected(store.name, audits)
        except BaseException:
            store.drop_version(number)
            raise
        store.complete_and_switch(number)
        kept = (number, live.number if live else number)
        for old in store.versions():
            if old.number not in kept:
                store.drop_version(old.number)
        loaded = store.live()
        if loaded is None or loaded.number != number:
            raise RuntimeError(f"online store {store.name}: version {number} is not live after the switch")
        return dataclasses.replace(loaded, audits=tuple(audits))


def rollback_version(store: VersionedBackend, lock_timeout_s: float) -> tuple[int, int]:
    """Make the previous version live again; returns (from, to). ``FileNotFoundError`` when no
    complete previous version is kept."""
    with store.writer_lock(lock_timeout_s, None):
        live = store.live()
        previous = next((v for v in store.versions() if live and v.number == live.previous), None)
        if live is None or previous is None or previous.state != "complete":
            raise FileNotFoundError(f"online store {store.name}: no previous version is kept to roll back to")
        store.switch(previous.number)
        return live.number, previous.number
