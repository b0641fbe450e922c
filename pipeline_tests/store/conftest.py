"""The store tests' stores: each test runs against a real SQLite file and a real redis-server."""

from __future__ import annotations

import uuid

import pytest

from pipeline.store.redis_store import RedisStore
from pipeline.store.sqlite import SQLiteStore


@pytest.fixture(params=["sqlite", "redis"])
def backend(request, tmp_path):
    """(kind, how to open the store, its address for a loader process)."""
    if request.param == "sqlite":
        path = str(tmp_path / "online.db")
        return "sqlite", lambda: SQLiteStore(path), path
    namespace = f"t{uuid.uuid4().hex[:8]}:"
    url = request.getfixturevalue("redis_url")
    return "redis", lambda: RedisStore(url, namespace=namespace), f"{url}#{namespace}"


@pytest.fixture
def store(backend):
    s = backend[1]()
    yield s
    s.close()
