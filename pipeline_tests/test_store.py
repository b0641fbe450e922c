"""Online feature stores against a real SQLite file and a real redis-server."""

import threading
import uuid

import numpy as np
import pytest

from pipeline.store.redis_store import RedisStore
from pipeline.store.sqlite import SQLiteStore


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = SQLiteStore(tmp_path / "online.db")
    else:
        s = RedisStore(request.getfixturevalue("redis_url"), namespace=f"t{uuid.uuid4().hex[:8]}:")
    yield s
    s.close()


def _tables(seed=0, users=500, restaurants=300, shift=0.0):
    rng = np.random.default_rng(seed)
    return (np.arange(users) * 3, rng.normal(size=(users, 30)).astype(np.float32) + shift,
            np.arange(restaurants) + 10, rng.normal(size=(restaurants, 10)).astype(np.float32) + shift)


def test_fetch_returns_exact_float32_rows_in_request_order(store):
    user_ids, users, restaurant_ids, restaurants = _tables()
    store.load("users", user_ids, users, "v1")
    store.load("restaurants", restaurant_ids, restaurants, "v1")
    wanted = [15, 10, 999, 300, 12]  # 999 is unknown
    got = store.fetch(int(user_ids[7]), wanted)
    np.testing.assert_array_equal(got.user, users[7])
    assert got.found.tolist() == [True, True, False, True, True]
    np.testing.assert_array_equal(got.restaurants, restaurants[[5, 0, 290, 2]])
    assert store.fetch(1, [10]).user is None  # user 1 is not a multiple of 3
    assert store.fetch(0, []).restaurants.shape == (0, 10)
    assert store.version("users") == "v1"


def test_reload_replaces_values_and_removes_stale_entities(store):
    user_ids, users, restaurant_ids, restaurants = _tables()
    store.load("restaurants", restaurant_ids, restaurants, "v1")
    store.load("restaurants", restaurant_ids[:100], restaurants[:100] + 1, "v2")
    got = store.fetch(0, [10, 200])
    assert got.found.tolist() == [True, False]
    np.testing.assert_array_equal(got.restaurants[0], restaurants[0] + 1)
    assert store.version("restaurants") == "v2"


def test_concurrent_reader_never_sees_a_missing_or_partial_entry(store):
    user_ids, users, restaurant_ids, restaurants = _tables(users=20_000, restaurants=5_000)
    store.load("users", user_ids, users, "v0")
    store.load("restaurants", restaurant_ids, restaurants, "v0")
    stop, problems, reads = threading.Event(), [], [0]

    def reader():
        rng = np.random.default_rng(1)
        while not stop.is_set():
            u = int(rng.integers(0, len(user_ids)))
            r = rng.integers(0, len(restaurant_ids), 50)
            got = store.fetch(int(user_ids[u]), restaurant_ids[r].tolist())
            if got.user is None or not got.found.all():
                problems.append("missing")
                continue
            # every row must be exactly the original plus one whole generation (old or new)
            generation = np.round(got.user[0] - users[u, 0])
            if not np.array_equal(got.user, users[u] + np.float32(generation)):
                problems.append("partial user row")
            generations = np.round(got.restaurants[:, 0] - restaurants[r, 0]).astype(np.float32)
            if not np.array_equal(got.restaurants, restaurants[r] + generations[:, None]):
                problems.append("partial restaurant row")
            reads[0] += 1

    thread = threading.Thread(target=reader)
    thread.start()
    for generation in range(1, 4):
        store.load("users", user_ids, users + generation, f"v{generation}")
        store.load("restaurants", restaurant_ids, restaurants + generation, f"v{generation}")
    stop.set()
    thread.join()
    assert reads[0] > 10 and problems == []
    np.testing.assert_array_equal(store.fetch(int(user_ids[5]), []).user, users[5] + 3)
