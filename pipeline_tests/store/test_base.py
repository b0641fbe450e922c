"""The store interface on a real SQLite file and a real redis-server: exact rows in request order, the
load audit, every read from one version while versions switch, and the reads of a server that holds
the restaurants (the user alone with the live snapshot's name; a whole version's restaurants)."""

import threading

import numpy as np
import pytest

from pipeline.store.base import FeaturesNotLoaded, audit_loaded, encode
from pipeline_devtools.synthetic import feature_tables


def test_fetch_returns_exact_float32_rows_in_request_order(store):
    with pytest.raises(FeaturesNotLoaded):
        store.fetch(0, [10])
    users, restaurants = feature_tables()
    live = store.publish(users, restaurants)
    assert (live.number, live.users_version, live.users_rows, live.state) == (1, "uv", 500, "complete")
    wanted = [15, 10, 999, 300, 12]  # 999 is unknown
    got = store.fetch(int(users.ids[7]), wanted)
    np.testing.assert_array_equal(got.user, users.values[7])
    assert got.found.tolist() == [True, True, False, True, True] and got.version == 1
    np.testing.assert_array_equal(got.restaurants, restaurants.values[[5, 0, 290, 2]])
    assert store.fetch(1, [10]).user is None  # user 1 is not a multiple of 3
    assert store.fetch(0, []).restaurants.shape == (0, 10)


def test_the_load_audit_counts_rows_and_compares_sampled_bytes():
    users, restaurants = feature_tables(users=50, restaurants=40)
    stored = {"users": dict(zip(users.ids.tolist(), encode(users.values), strict=True)),
              "restaurants": dict(zip(restaurants.ids.tolist(), encode(restaurants.values), strict=True))}

    def read_back(kind, ids):
        return len(stored[kind]), [stored[kind].get(int(i)) for i in ids]

    [ok] = audit_loaded(read_back, users, restaurants)
    assert ok.passed and ok.metadata == {"users_rows": 50, "restaurants_rows": 40}
    del stored["users"][3]
    stored["restaurants"][10] = b"\0" * 40
    [bad] = audit_loaded(read_back, users, restaurants)
    assert not bad.passed
    assert "users: 49 rows stored, the snapshot has 50" in bad.description
    assert "restaurants: " in bad.description and "sampled rows read back differently" in bad.description


def test_every_read_comes_from_one_version_while_versions_switch(store):
    users, restaurants = feature_tables(users=20_000, restaurants=5_000)
    store.publish(users, restaurants)
    stop, problems, reads = threading.Event(), [], [0]

    def reader():
        rng = np.random.default_rng(1)
        while not stop.is_set():
            u = int(rng.integers(0, len(users.ids)))
            r = rng.integers(0, len(restaurants.ids), 50)
            got = store.fetch(int(users.ids[u]), restaurants.ids[r].tolist())
            if got.user is None or not got.found.all():
                problems.append("missing")
                continue
            # the user and every restaurant of one read belong to the same generation
            generation = np.float32(np.round(got.user[0] - users.values[u, 0]))
            if not np.array_equal(got.user, users.values[u] + generation):
                problems.append("partial user row")
            if not np.array_equal(got.restaurants, restaurants.values[r] + generation):
                problems.append(f"restaurants of another version than the user (version {got.version})")
            reads[0] += 1

    thread = threading.Thread(target=reader)
    thread.start()
    for generation in range(1, 4):
        store.publish(*feature_tables(users=20_000, restaurants=5_000, shift=generation, version=str(generation)))
    stop.set()
    thread.join()
    assert reads[0] > 10 and problems == []
    np.testing.assert_array_equal(store.fetch(int(users.ids[5]), []).user, users.values[5] + 3)


def test_a_user_read_names_the_live_restaurant_snapshot(store):
    with pytest.raises(FeaturesNotLoaded):
        store.fetch_user(0)
    users, restaurants = feature_tables()
    store.publish(users, restaurants)
    read = store.fetch_user(int(users.ids[7]))
    np.testing.assert_array_equal(read.user, users.values[7])
    assert (read.version, read.restaurants_version) == (1, "rv")
    assert store.fetch_user(1).user is None and store.fetch_user(1).restaurants_version == "rv"
    store.publish(*feature_tables(shift=1.0, version="2"))
    read = store.fetch_user(int(users.ids[7]))
    assert (read.version, read.restaurants_version) == (2, "r2")
    np.testing.assert_array_equal(read.user, users.values[7] + 1)
    store.rollback()
    assert (store.fetch_user(0).version, store.fetch_user(0).restaurants_version) == (1, "rv")


def test_a_versions_restaurants_are_read_whole(store):
    users, restaurants = feature_tables(users=50, restaurants=12_345)  # more than one scan slice
    first = store.publish(users, restaurants)
    store.publish(*feature_tables(users=50, restaurants=12_400, shift=1.0, version="2"))
    held = store.restaurant_features(first.number)
    order = np.argsort(held.ids)
    assert held.version == "rv" and held.values.dtype == np.float32
    np.testing.assert_array_equal(held.ids[order], restaurants.ids)
    np.testing.assert_array_equal(held.values[order], restaurants.values)
    assert len(store.restaurant_features(first.number + 1).ids) == 12_400
    with pytest.raises(FeaturesNotLoaded, match="version 7"):
        store.restaurant_features(7)
