"""Choosing the online store backend from settings."""

from __future__ import annotations

from pipeline.store.base import DEFAULT_WRITE_TIMEOUT_S, FeatureStore

BACKENDS = ("sqlite", "redis")


def resolve_backend(backend: str, redis_url: str) -> str:
    """The explicit backend, else redis when a Redis URL is given, else sqlite."""
    chosen = backend or ("redis" if redis_url else "sqlite")
    if chosen not in BACKENDS:
        raise ValueError(f"online store backend must be one of {BACKENDS}, got {chosen!r}")
    if chosen == "redis" and not redis_url:
        raise ValueError("the redis online store needs REDIS_URL (e.g. redis://:PASSWORD@127.0.0.1:6379/0)")
    return chosen


def open_store(backend: str, redis_url: str, sqlite_path: str,
               timeout_s: float = DEFAULT_WRITE_TIMEOUT_S, redis_ca_file: str = "") -> FeatureStore:
    """The chosen store; ``timeout_s`` bounds each call (the API passes its read timeout);
    ``redis_ca_file`` verifies a ``rediss://`` server (PIPELINE_REDIS_CA_FILE)."""
    if resolve_backend(backend, redis_url) == "redis":
        from pipeline.store.redis_store import RedisStore

        return RedisStore(redis_url, timeout_s=timeout_s, ca_file=redis_ca_file)
    from pipeline.store.sqlite import SQLiteStore

    return SQLiteStore(sqlite_path, timeout_s=timeout_s)
