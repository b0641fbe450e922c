"""The online feature store interface, its compact encoding, and versioned loads.

Features are stored per entity as float32 bytes (30 × 4 = 120 B per user, 40 B per restaurant).
Each load writes a complete new *version* (users and restaurants together) beside the live one,
audits it, and switches one pointer; every read takes its user and all its restaurants from the
version the pointer names at that instant, in one round trip. Superseded versions are removed
after the switch: at most the live version, the previous one and one loading exist. A killed
load leaves its partial version unpublished (the previous stays live) and the next load removes
it. One loader at a time: a lock held for the whole load (a file lock for SQLite, a Redis lock
with a lease for Redis), so a second loader waits instead of interleaving. The load and the
rollback are one algorithm for every store (:mod:`pipeline.store.versioned`) over primitives
each store implements.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pipeline.audits import AuditResult, Rejected
from pipeline.data.shrink import ShrinkGuard

KINDS = ("users", "restaurants")
LOAD_BATCH = 10_000
AUDIT_SAMPLE = 256
STORE_CHECK = "online_features_complete"
SHRINK_CHECK = "online_features_not_shrunk"


# How long a read may take before the store counts as unavailable: the API's reads use this, a
# loader's bulk writes use DEFAULT_WRITE_TIMEOUT_S.
DEFAULT_READ_TIMEOUT_S = 0.2
DEFAULT_WRITE_TIMEOUT_S = 10.0


class FeaturesNotLoaded(LookupError):
    """The store has no live version (nothing loaded yet, or the store was emptied or replaced)."""


class StoreUnavailable(ConnectionError):
    """The store did not answer in time or could not be reached; the read can be tried again."""


@dataclass(frozen=True)
class FeatureTable:
    """One kind's rows for a load: ids, float32 values [n, width], and the snapshot version."""

    ids: np.ndarray
    values: np.ndarray
    version: str

    @classmethod
    def of(cls, snapshot) -> FeatureTable:
        """The rows of a :class:`~pipeline.data.features.FeatureSnapshot`."""
        return cls(snapshot.ids, snapshot.values, snapshot.version)


@dataclass
class Fetched:
    """What one read returned: the user's vector (None if unknown), the restaurants found, and
    the store version they all came from."""

    user: np.ndarray | None
    restaurants: np.ndarray          # [found, width] float32, in request order
    found: np.ndarray                # bool mask over the requested restaurant ids
    version: int = 0


@dataclass(frozen=True)
class UserRead:
    """A user's features (None if unknown) from the live version, and which restaurant snapshot
    that version holds: a caller holding that snapshot's restaurants needs nothing else."""

    user: np.ndarray | None
    version: int
    restaurants_version: str


@dataclass(frozen=True)
class StoreVersion:
    """A version of the store's contents: its number and the snapshot versions it holds."""

    number: int
    users_version: str
    restaurants_version: str
    users_rows: int
    restaurants_rows: int
    state: str                       # loading or complete
    created_at: str
    previous: int | None = None
    audits: tuple[AuditResult, ...] = ()   # filled in by the publish that made it live


def encode(values: np.ndarray) -> list[bytes]:
    values = np.ascontiguousarray(values, dtype=np.float32)
    return [row.tobytes() for row in values]


def decode(blobs: Sequence[bytes], width: int) -> np.ndarray:
    if not blobs:
        return np.empty((0, width), np.float32)
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), width)


def joined_rows(slices: Sequence[tuple[np.ndarray, np.ndarray]], width: int, version: str) -> FeatureTable:
    """One table of slices of (ids, values) read one after another."""
    if not slices:
        return FeatureTable(np.empty(0, np.int64), np.empty((0, width), np.float32), version)
    return FeatureTable(np.concatenate([ids for ids, _ in slices]),
                        np.concatenate([values for _, values in slices]), version)


def validate_tables(store, users: FeatureTable, restaurants: FeatureTable) -> None:
    for kind, table, width in (("users", users, store.user_width), ("restaurants", restaurants,
                                                                     store.restaurant_width)):
        if table.values.ndim != 2 or table.values.shape[1] != width or len(table.ids) != len(table.values):
            raise ValueError(f"{kind}: expected {len(table.ids)} rows of {width} features, got "
                             f"{table.values.shape}")
        ids = np.asarray(table.ids)
        if len(ids) > 1 and not np.all(ids[1:] > ids[:-1]):
            raise ValueError(f"{kind} (snapshot {table.version}): ids must be unique and sorted ascending")


def audit_loaded(read_back: Callable[[str, np.ndarray], tuple[int, list[bytes | None]]],
                 users: FeatureTable, restaurants: FeatureTable, seed: int = 0) -> list[AuditResult]:
    """A loaded version must hold every row of both snapshots, and sampled rows must read back
    byte for byte. ``read_back(kind, ids) -> (rows stored, blobs of ids)``."""
    rng = np.random.default_rng(seed)
    problems, metadata = [], {}
    for kind, table in (("users", users), ("restaurants", restaurants)):
        sample = rng.integers(0, len(table.ids), AUDIT_SAMPLE) if len(table.ids) else np.empty(0, np.int64)
        stored, blobs = read_back(kind, table.ids[sample])
        expected = encode(table.values[sample])
        mismatched = sum(b != e for b, e in zip(blobs, expected, strict=True))
        metadata[f"{kind}_rows"] = stored
        if stored != len(table.ids):
            problems.append(f"{kind}: {stored} rows stored, the snapshot has {len(table.ids)}")
        if mismatched:
            problems.append(f"{kind}: {mismatched} of {len(sample)} sampled rows read back differently")
    return [AuditResult(STORE_CHECK, not problems, metadata, "; ".join(problems))]


def refuse_shrink(store_name: str, guard: ShrinkGuard, live: StoreVersion | None, users: FeatureTable,
                  restaurants: FeatureTable) -> AuditResult:
    """The shrink rule's audit of a load against the live version (rows of each kind); raises
    :class:`Rejected` naming ``store_name`` and the counts when the load may not go ahead."""
    audit = guard.audit(SHRINK_CHECK, [
        ("users", len(users.ids), live.users_rows if live else None, None),
        ("restaurants", len(restaurants.ids), live.restaurants_rows if live else None, None)])
    if not audit.passed:
        raise Rejected(store_name, [audit])
    return audit


class FeatureStore(Protocol):
    user_width: int
    restaurant_width: int

    def fetch(self, user_id: int, restaurant_ids: Iterable[int]) -> Fetched:
        """The user's and the given restaurants' features from the live version, in one round
        trip; :class:`FeaturesNotLoaded` when there is no live version, :class:`StoreUnavailable`
        when the store does not answer within its read timeout."""

    async def fetch_async(self, user_id: int, restaurant_ids: Iterable[int]) -> Fetched:
        """``fetch`` for an asyncio caller, never blocking its event loop."""

    def fetch_user(self, user_id: int) -> UserRead:
        """The user's features and the live version's restaurant snapshot, in one round trip;
        raises as ``fetch``."""

    async def fetch_user_async(self, user_id: int) -> UserRead:
        """``fetch_user`` for an asyncio caller."""

    def restaurant_features(self, number: int) -> FeatureTable:
        """Every restaurant row of version ``number`` (its ``version`` the snapshot's);
        :class:`FeaturesNotLoaded` when the version is gone or changed while read."""

    def publish(self, users: FeatureTable, restaurants: FeatureTable,
                on_wait: Callable[[str], None] | None = None, guard: ShrinkGuard | None = None) -> StoreVersion:
        """Load a new version, audit it, make it live, remove superseded ones; :class:`Rejected`
        if the audit fails or, before loading, if ``guard`` (default: the default shrink rule,
        no shrink allowed) refuses it against the live version (the previous version stays live)."""

    def live(self) -> StoreVersion | None:
        """The live version, None when nothing is loaded."""

    def versions(self) -> list[StoreVersion]:
        """Every version present (complete or loading), oldest first."""

    def rollback(self) -> tuple[int, int]:
        """Make the previous version live again; returns (from, to)."""

    def close(self) -> None: ...

    async def close_async(self) -> None:
        """Close what ``fetch_async`` opened."""


__all__ = ["FeatureStore", "FeatureTable", "Fetched", "FeaturesNotLoaded", "Rejected", "StoreUnavailable",
           "StoreVersion", "UserRead"]
