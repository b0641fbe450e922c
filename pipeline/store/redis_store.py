"""Redis online store: one key per entity holding float32 bytes; a request is one MGET."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import redis

from pipeline.store.base import KINDS, LOAD_BATCH, Fetched, decode, encode

_PREFIX = {"users": "u:", "restaurants": "r:"}


class RedisStore:
    """Feature store in a Redis server (``redis://host:port/db``); keys ``{namespace}u:{id}`` and
    ``{namespace}r:{id}``; the id list of the last load of each kind is kept to remove stale keys."""

    def __init__(self, url: str, namespace: str = "features:", user_width: int = 30, restaurant_width: int = 10):
        self.client = redis.Redis.from_url(url)
        self.namespace = namespace
        self.user_width, self.restaurant_width = user_width, restaurant_width

    def _key(self, kind: str, entity: int) -> str:
        return f"{self.namespace}{_PREFIX[kind]}{entity}"

    def fetch(self, user_id: int, restaurant_ids: Sequence[int]) -> Fetched:
        ids = [int(i) for i in restaurant_ids]
        blobs = self.client.mget([self._key("users", int(user_id))] + [self._key("restaurants", i) for i in ids])
        user = decode([blobs[0]], self.user_width)[0] if blobs[0] is not None else None
        found = np.fromiter((b is not None for b in blobs[1:]), dtype=bool, count=len(ids))
        return Fetched(user, decode([b for b in blobs[1:] if b is not None], self.restaurant_width), found)

    def load(self, kind: str, ids: np.ndarray, values: np.ndarray, version: str) -> int:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        ids = np.asarray(ids, dtype=np.int64)
        for start in range(0, len(ids), LOAD_BATCH):
            end = start + LOAD_BATCH
            keys = [self._key(kind, i) for i in ids[start:end].tolist()]
            self.client.mset(dict(zip(keys, encode(values[start:end]), strict=True)))
        ids_key = f"{self.namespace}{kind}:ids"
        previous = self.client.get(ids_key)
        if previous:
            stale = np.setdiff1d(np.frombuffer(previous, dtype=np.int64), ids)
            for start in range(0, len(stale), LOAD_BATCH):
                self.client.delete(*[self._key(kind, i) for i in stale[start:start + LOAD_BATCH].tolist()])
        self.client.mset({ids_key: ids.tobytes(), f"{self.namespace}{kind}:version": version})
        return len(ids)

    def version(self, kind: str) -> str | None:
        value = self.client.get(f"{self.namespace}{kind}:version")
        return value.decode() if value is not None else None

    def close(self) -> None:
        self.client.close()
