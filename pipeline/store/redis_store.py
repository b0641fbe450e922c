"""Redis online store: one hash per kind and version; a read is one server-side script call.

Keys (``ns`` the namespace): ``{ns}live`` the live version number; ``{ns}v{N}:u`` and
``{ns}v{N}:r`` hashes of id → float32 bytes; ``{ns}v{N}:meta`` the version's description;
``{ns}versions`` the set of version numbers; ``{ns}writer`` the loader's lock. The read script
looks up the live version and fetches the user and every restaurant from it in one round trip,
atomically (Redis runs a script alone). A single Redis server (or one hash slot) is assumed:
the script builds key names from the live version.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import cast

import numpy as np
import redis
import redis.asyncio
import redis.asyncio.retry
from redis.backoff import NoBackoff
from redis.retry import Retry

from pipeline.data.schema import N_RESTAURANT_FEATURES, N_USER_FEATURES
from pipeline.data.shrink import ShrinkGuard
from pipeline.locks import DEFAULT_LOCK_TIMEOUT_S, LockTimeout
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
from pipeline.store.redis_connection import client_options, display_url
from pipeline.store.versioned import load_version, rollback_version

# HMGET in slices: Lua's unpack() has a limit of a few thousand values.
_FETCH = """
local v = redis.call('GET', KEYS[1])
if not v then return false end
local base = ARGV[1] .. 'v' .. v
local user = redis.call('HGET', base .. ':u', ARGV[2])
local found = {}
local n = #ARGV
for first = 3, n, 4000 do
  local part = redis.call('HMGET', base .. ':r', unpack(ARGV, first, math.min(first + 3999, n)))
  for i = 1, #part do found[#found + 1] = part[i] end
end
return {v, user, found}
"""
# The user and the live version's restaurant snapshot, for a reader that holds the restaurants.
_FETCH_USER = """
local v = redis.call('GET', KEYS[1])
if not v then return false end
local base = ARGV[1] .. 'v' .. v
return {v, redis.call('HGET', base .. ':meta', 'restaurants_version'), redis.call('HGET', base .. ':u', ARGV[2])}
"""
_SCAN_COUNT = 10_000
_LEASE_S = 30  # a killed loader's lock expires after this long


class RedisStore:
    """Feature store in a Redis server (``redis://[[user]:password@]host:port/db``, or ``rediss://`` for
    TLS verified against ``ca_file``; :mod:`pipeline.store.redis_connection`).

    Messages name the URL with its password masked (``name``); the URL itself is kept private. Every
    command is bounded by ``timeout_s`` (connect and read). A command that meets a broken connection
    (a pooled connection to a server that restarted) is retried once on a new one; a timeout is not
    retried, so a stalled server costs one timeout, not a backoff series.
    """

    def __init__(self, url: str, namespace: str = "features:", user_width: int = N_USER_FEATURES,
                 restaurant_width: int = N_RESTAURANT_FEATURES,
                 timeout_s: float = DEFAULT_WRITE_TIMEOUT_S, ca_file: str = ""):
        self._options = client_options(url, ca_file)
        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)), **self._options)
        self._url, self.namespace, self.timeout_s = url, namespace, timeout_s
        self.name = display_url(url)
        self._async_client: redis.asyncio.Redis | None = None  # made in the event loop that uses it
        self.user_width, self.restaurant_width = user_width, restaurant_width
        self._fetch = self.client.register_script(_FETCH)
        self._fetch_user = self.client.register_script(_FETCH_USER)

    def _key(self, *parts: object) -> str:
        return self.namespace + "".join(str(p) for p in parts)

    def _unavailable(self, error: redis.RedisError) -> StoreUnavailable:
        return StoreUnavailable(f"redis {self.name}: {type(error).__name__}: {error} (timeout {self.timeout_s} s)")

    def fetch(self, user_id: int, restaurant_ids: Iterable[int]) -> Fetched:
        ids = [int(i) for i in restaurant_ids]
        try:
            answer = self._fetch(keys=[self._key("live")], args=[self.namespace, int(user_id), *ids])
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise self._unavailable(error) from error
        return self._fetched(answer, ids)

    def _async_scripts(self):
        """The read scripts on an asyncio client (same timeouts and retry), made in the event loop
        that first uses them."""
        if self._async_client is None:
            self._async_client = redis.asyncio.Redis.from_url(
                self._url, socket_timeout=self.timeout_s, socket_connect_timeout=self.timeout_s,
                retry=redis.asyncio.retry.Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
                **self._options)
            self._async_fetch = self._async_client.register_script(_FETCH)
            self._async_fetch_user = self._async_client.register_script(_FETCH_USER)
        return self._async_fetch, self._async_fetch_user

    async def fetch_async(self, user_id: int, restaurant_ids: Iterable[int]) -> Fetched:
        """``fetch`` on an asyncio client: the caller's event loop is never blocked, and no thread
        is woken per request."""
        fetch, _ = self._async_scripts()
        ids = [int(i) for i in restaurant_ids]
        try:
            answer = await fetch(keys=[self._key("live")], args=[self.namespace, int(user_id), *ids])
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise self._unavailable(error) from error
        return self._fetched(answer, ids)

    def fetch_user(self, user_id: int) -> UserRead:
        try:
            answer = self._fetch_user(keys=[self._key("live")], args=[self.namespace, int(user_id)])
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise self._unavailable(error) from error
        return self._user_read(answer)

    async def fetch_user_async(self, user_id: int) -> UserRead:
        _, fetch_user = self._async_scripts()
        try:
            answer = await fetch_user(keys=[self._key("live")], args=[self.namespace, int(user_id)])
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise self._unavailable(error) from error
        return self._user_read(answer)

    def _user_read(self, answer) -> UserRead:
        if answer is None:
            raise FeaturesNotLoaded(f"no feature version is live in {self.name} (namespace {self.namespace!r})")
        version, restaurants_version, user_blob = answer
        user = decode([user_blob], self.user_width)[0] if user_blob is not None else None
        return UserRead(user, int(version), (restaurants_version or b"").decode())

    def restaurant_features(self, number: int) -> FeatureTable:
        """Scanned in slices (HSCAN), so Redis never serves one long command, each slice turned
        into arrays before the next is read (a reader's Python objects stay few); a scan may
        return an entry twice, so repeated ids are dropped."""
        key, cursor, slices = self._rows_key(number, "restaurants"), 0, []
        try:
            version = self._version(number)
            while True:
                cursor, reply = self.client.hscan(key, cursor, count=_SCAN_COUNT)
                part = cast(dict[bytes, bytes], reply)  # field → value, bytes (no decode_responses)
                if part:
                    slices.append((np.fromiter(map(int, part), np.int64, len(part)),
                                   decode(list(part.values()), self.restaurant_width)))
                if cursor == 0:
                    break
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise self._unavailable(error) from error
        table = joined_rows(slices, self.restaurant_width, version.restaurants_version if version else "")
        ids, first = np.unique(table.ids, return_index=True)
        table = FeatureTable(ids, table.values[first], table.version)
        if version is None or len(table.ids) != version.restaurants_rows:
            raise FeaturesNotLoaded(f"version {number} of {self.name} is gone or changed while read "
                                    f"({len(table.ids)} restaurants read)")
        return table

    def _fetched(self, answer, ids: list[int]) -> Fetched:
        if answer is None:
            raise FeaturesNotLoaded(f"no feature version is live in {self.name} (namespace {self.namespace!r})")
        version, user_blob, blobs = answer
        user = decode([user_blob], self.user_width)[0] if user_blob is not None else None
        found = np.fromiter((b is not None for b in blobs), dtype=bool, count=len(ids))
        return Fetched(user, decode([b for b in blobs if b is not None], self.restaurant_width), found, int(version))

    # ----- versions

    def _version(self, number: int) -> StoreVersion | None:
        # redis types a reply as bytes | str; this client (no decode_responses) is sent bytes
        meta = cast(dict[bytes, bytes], self.client.hgetall(self._key("v", number, ":meta")))
        if not meta:
            return None
        m = {k.decode(): v.decode() for k, v in meta.items()}
        return StoreVersion(number, m["users_version"], m["restaurants_version"], int(m["users_rows"]),
                            int(m["restaurants_rows"]), m["state"], m["created_at"],
                            int(m["previous"]) if m.get("previous") else None)

    def versions(self) -> list[StoreVersion]:
        try:
            numbers = sorted(int(n) for n in self.client.smembers(self._key("versions")))
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise self._unavailable(error) from error
        return [v for v in (self._version(n) for n in numbers) if v is not None]

    def live(self) -> StoreVersion | None:
        try:
            number = self.client.get(self._key("live"))
            return self._version(int(number)) if number is not None else None
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise self._unavailable(error) from error

    def _acquire(self, lock: redis.lock.Lock) -> bool:
        try:
            return lock.acquire()
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise self._unavailable(error) from error

    def _lock(self, timeout_s: float, on_wait) -> redis.lock.Lock:
        lock = self.client.lock(self._key("writer"), timeout=_LEASE_S, blocking=True, blocking_timeout=0.05)
        deadline, told = time.monotonic() + timeout_s, False
        while not self._acquire(lock):
            if time.monotonic() > deadline:
                raise LockTimeout(f"online store {self.name}: another loader held the lock for more than {timeout_s} s")
            if on_wait is not None and not told:
                on_wait(f"waiting for the other loader of the online store {self.name}")
                told = True
        return lock

    # ----- the primitives of the versioned load (pipeline/store/versioned.py)

    @property
    def write_batch(self) -> int:
        return LOAD_BATCH

    @contextlib.contextmanager
    def writer_lock(self, timeout_s: float, on_wait: Callable[[str], None] | None) -> Iterator[Callable[[], None]]:
        """A Redis lock with a lease of ``_LEASE_S``, renewed between batches: a killed loader's lock expires."""
        lock = self._lock(timeout_s, on_wait)

        def renew() -> None:
            lock.extend(_LEASE_S, replace_ttl=True)

        try:
            yield renew
        finally:
            try:
                lock.release()
            except redis.exceptions.LockError:
                pass  # the lease ran out; nothing to release

    def prepare_load(self) -> None:
        pass  # Redis creates keys as they are written

    def create_version(self, users: FeatureTable, restaurants: FeatureTable, created_at: str,
                       previous: int | None) -> int:
        number = int(self.client.incr(self._key("next_version")))
        self.client.hset(self._key("v", number, ":meta"), mapping={
            "users_version": users.version, "restaurants_version": restaurants.version,
            "users_rows": len(users.ids), "restaurants_rows": len(restaurants.ids), "state": "loading",
            "created_at": created_at, "previous": previous if previous is not None else ""})
        self.client.sadd(self._key("versions"), number)
        return number

    def _rows_key(self, number: int, kind: str) -> str:
        return self._key("v", number, ":", "u" if kind == "users" else "r")

    def write_rows(self, number: int, kind: str, ids: np.ndarray, values: np.ndarray) -> None:
        self.client.hset(self._rows_key(number, kind), mapping=dict(zip(ids.tolist(), encode(values), strict=True)))

    def read_back(self, number: int, kind: str, ids: np.ndarray) -> tuple[int, list[bytes | None]]:
        key = self._rows_key(number, kind)
        # bytes, not str: this client has no decode_responses (redis types a reply as bytes | str)
        blobs = cast(list[bytes | None], self.client.hmget(key, [int(i) for i in ids])) if len(ids) else []
        return int(self.client.hlen(key)), blobs

    def complete_and_switch(self, number: int) -> None:
        self.client.hset(self._key("v", number, ":meta"), "state", "complete")
        self.switch(number)

    def switch(self, number: int) -> None:
        self.client.set(self._key("live"), number)

    def drop_version(self, number: int) -> None:
        self.client.unlink(self._key("v", number, ":u"), self._key("v", number, ":r"), self._key("v", number, ":meta"))
        self.client.srem(self._key("versions"), number)

    def publish(self, users: FeatureTable, restaurants: FeatureTable,
                on_wait: Callable[[str], None] | None = None, guard: ShrinkGuard | None = None,
                *, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> StoreVersion:
        return load_version(self, users, restaurants, on_wait, lock_timeout_s, guard)

    def rollback(self, lock_timeout_s: float = 60.0) -> tuple[int, int]:
        return rollback_version(self, lock_timeout_s)

    def close(self) -> None:
        self.client.close()

    async def close_async(self) -> None:
        if self._async_client is not None:
            await self._async_client.aclose()
            self._async_client = None
