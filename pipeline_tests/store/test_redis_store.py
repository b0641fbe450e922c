"""The Redis store against real redis-servers: a stalled or killed server is unavailable within the
timeout, and its errors and a waiting loader's messages name the URL with its password masked."""

from __future__ import annotations

import time
import urllib.parse

import numpy as np
import pytest

from pipeline.locks import LockTimeout
from pipeline.store.base import FeaturesNotLoaded, FeatureTable, StoreUnavailable
from pipeline.store.redis_store import RedisStore
from pipeline_devtools.leaks import PASSWORD, checked, leaks
from pipeline_devtools.redis_server import RedisServer
from pipeline_devtools.synthetic import feature_tables


def test_a_stalled_redis_is_unavailable_within_the_timeout_not_after_retries(tmp_path):
    server = RedisServer(str(tmp_path)).start()
    try:
        store = RedisStore(server.url, timeout_s=0.2)
        users, restaurants = feature_tables()
        store.publish(users, restaurants)
        server.pause()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="Timeout"):
            store.fetch(int(users.ids[0]), restaurants.ids[:3])
        assert time.monotonic() - started < 0.6
        server.resume()
        assert store.fetch(int(users.ids[0]), restaurants.ids[:3]).version == 1  # recovered, same client
        server.kill()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="ConnectionError"):
            store.fetch(int(users.ids[0]), restaurants.ids[:3])
        assert time.monotonic() - started < 0.6
        server.start()  # empty, same port: the pooled connection is stale, retried once on a new one
        with pytest.raises(FeaturesNotLoaded):
            store.fetch(int(users.ids[0]), restaurants.ids[:3])
        store.close()
    finally:
        server.stop()


def test_a_wrong_password_is_a_clear_error_that_names_the_masked_url(password_redis):
    url = password_redis.url.replace(urllib.parse.quote(PASSWORD, safe=""), "not-the-password")
    store = RedisStore(url, timeout_s=2)
    try:
        with pytest.raises(StoreUnavailable) as refused:
            store.live()
    finally:
        store.close()
    message = str(refused.value)
    assert f"redis redis://:***@127.0.0.1:{password_redis.port}/0: AuthenticationError" in message, message
    assert "not-the-password" not in message and not leaks(message)


def test_a_loaders_wait_and_lock_timeout_name_the_masked_url(password_redis):
    """What a Dagster step logs while it waits for another loader, and its failure when it gives up."""
    holder, waiter = RedisStore(password_redis.url), RedisStore(password_redis.url)
    said: list[str] = []
    try:
        lock = holder._lock(5, None)
        users = FeatureTable(np.arange(3, dtype=np.int64), np.zeros((3, 30), np.float32), "u")
        restaurants = FeatureTable(np.arange(3, dtype=np.int64), np.zeros((3, 10), np.float32), "r")
        with pytest.raises(LockTimeout) as gave_up:
            waiter.publish(users, restaurants, on_wait=said.append, lock_timeout_s=0.3)
        lock.release()
    finally:
        holder.close()
        waiter.close()
    assert said and "redis://:***@127.0.0.1" in said[0] and "redis://:***@127.0.0.1" in str(gave_up.value)
    for text in (*said, str(gave_up.value)):
        checked("a loader's message", text)
