"""Online feature stores against a real SQLite file and a real redis-server: versioned loads, one
version per read, killed and overlapping loaders."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.shrink import ShrinkGuard
from pipeline.store.base import FeaturesNotLoaded, FeatureTable, StoreUnavailable, audit_loaded, encode
from pipeline.store.redis_store import RedisStore
from pipeline.store.sqlite import _FETCH, SQLiteStore

SCRIPT = Path(__file__).parent / "scripts" / "load_store.py"


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


def _tables(seed=0, users=500, restaurants=300, shift=0.0, version="v"):
    rng = np.random.default_rng(seed)
    return (FeatureTable(np.arange(users) * 3, rng.normal(size=(users, 30)).astype(np.float32) + shift, f"u{version}"),
            FeatureTable(np.arange(restaurants) + 10, rng.normal(size=(restaurants, 10)).astype(np.float32) + shift,
                         f"r{version}"))


def test_fetch_returns_exact_float32_rows_in_request_order(store):
    with pytest.raises(FeaturesNotLoaded):
        store.fetch(0, [10])
    users, restaurants = _tables()
    live = store.publish(users, restaurants)
    assert (live.number, live.users_version, live.users_rows, live.state) == (1, "uv", 500, "complete")
    wanted = [15, 10, 999, 300, 12]  # 999 is unknown
    got = store.fetch(int(users.ids[7]), wanted)
    np.testing.assert_array_equal(got.user, users.values[7])
    assert got.found.tolist() == [True, True, False, True, True] and got.version == 1
    np.testing.assert_array_equal(got.restaurants, restaurants.values[[5, 0, 290, 2]])
    assert store.fetch(1, [10]).user is None  # user 1 is not a multiple of 3
    assert store.fetch(0, []).restaurants.shape == (0, 10)


def test_a_new_version_replaces_values_removes_stale_entities_and_prunes(store):
    users, restaurants = _tables()
    store.publish(users, restaurants)
    fewer = FeatureTable(restaurants.ids[:100], restaurants.values[:100] + 1, "r2")
    store.publish(users, fewer, guard=ShrinkGuard(allow=True))  # a deliberate shrink
    got = store.fetch(0, [10, 200])
    assert got.found.tolist() == [True, False] and got.version == 2
    np.testing.assert_array_equal(got.restaurants[0], restaurants.values[0] + 1)
    for _ in range(2):
        store.publish(users, restaurants)
    assert [v.number for v in store.versions()] == [3, 4]  # the live one and the one before it
    assert store.rollback() == (4, 3) and store.live().number == 3
    with pytest.raises(FileNotFoundError, match="no previous version"):
        store.rollback()


def test_sqlite_reads_look_up_every_row_by_its_full_key(tmp_path):
    store = SQLiteStore(tmp_path / "online.db")
    plan = [row[3] for row in store._connection(create=True).execute("EXPLAIN QUERY PLAN " + _FETCH, (1, "[1, 2]"))]
    store.close()
    assert "SEARCH user_features USING PRIMARY KEY (v=? AND id=?)" in plan
    assert "SEARCH r USING PRIMARY KEY (v=? AND id=?)" in plan and not [p for p in plan if p.startswith("SCAN r")]


def test_bad_tables_are_refused_and_nothing_is_published(store):
    users, restaurants = _tables()
    store.publish(users, restaurants)
    twin = FeatureTable(np.array([5, 5, 6]), np.zeros((3, 30), np.float32), "dup")
    with pytest.raises(ValueError, match=r"users \(snapshot dup\): ids must be unique and sorted"):
        store.publish(twin, restaurants)
    narrow = FeatureTable(users.ids, users.values[:, :29], "narrow")
    with pytest.raises(ValueError, match=r"users: expected 500 rows of 30 features, got \(500, 29\)"):
        store.publish(narrow, restaurants)
    assert store.live().number == 1 and [v.number for v in store.versions()] == [1]


def test_the_load_audit_counts_rows_and_compares_sampled_bytes():
    users, restaurants = _tables(users=50, restaurants=40)
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
    users, restaurants = _tables(users=20_000, restaurants=5_000)
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
        store.publish(*_tables(users=20_000, restaurants=5_000, shift=generation, version=str(generation)))
    stop.set()
    thread.join()
    assert reads[0] > 10 and problems == []
    np.testing.assert_array_equal(store.fetch(int(users.ids[5]), []).user, users.values[5] + 3)


def _loader(backend, users: int, shift: float, pause: float = 0.0) -> subprocess.Popen:
    kind, _, address = backend
    return subprocess.Popen([sys.executable, str(SCRIPT), kind, address, str(users), str(shift), str(pause)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_a_killed_load_leaves_the_previous_version_serving_and_the_next_load_completes(backend, store):
    assert _loader(backend, 200_000, 0.0).wait(timeout=120) == 0
    before = store.live()
    loader = _loader(backend, 200_000, 1.0, pause=0.002)  # slowed down so it is surely killed mid-load
    deadline = time.monotonic() + 60
    while not [v for v in store.versions() if v.state == "loading"]:
        assert time.monotonic() < deadline and loader.poll() is None, loader.stderr.read()
        time.sleep(0.01)
    time.sleep(0.3)
    os.kill(loader.pid, signal.SIGKILL)
    loader.wait()
    assert store.live() == before  # the previous version is still the one served
    got = store.fetch(3 * 150_000, [10, 11])
    assert got.version == before.number and got.user is not None
    assert np.allclose(got.user, 0.0)  # the old values (shift 0): nothing of the killed load
    done = _loader(backend, 200_000, 1.0)
    out, err = done.communicate(timeout=180)
    assert done.returncode == 0, err[-2000:]
    after = store.live()
    assert after.number > before.number and after.users_rows == 200_000
    assert [v.state for v in store.versions()] == ["complete", "complete"]  # the partial one is gone
    assert np.allclose(store.fetch(3 * 150_000, []).user, 1.0)


@pytest.mark.slow
def test_two_overlapping_loads_both_complete_and_delete_nobody(backend, store):
    loaders = [_loader(backend, 100_000, shift) for shift in (1.0, 2.0)]
    results = []
    for loader in loaders:
        out, err = loader.communicate(timeout=180)
        assert loader.returncode == 0, err[-2000:]
        results.append(json.loads(out.splitlines()[-1]))
    live = store.live()
    assert live.users_rows == 100_000 and {r["version"] for r in results} == {1, 2}
    every_user = store.fetch(0, [])
    assert every_user.user is not None
    rng = np.random.default_rng(0)
    for user in rng.integers(0, 100_000, 200):
        assert store.fetch(int(user) * 3, [10]).user is not None  # no user was lost between the loads


def test_sqlite_readers_follow_the_file_at_the_path(tmp_path):
    path = tmp_path / "online.db"
    reader = SQLiteStore(path, timeout_s=0.2)
    with pytest.raises(FeaturesNotLoaded, match="does not exist"):  # a reader never creates the file
        reader.fetch(1, [1])
    assert not path.exists() and reader.live() is None
    loader = SQLiteStore(path)
    users, restaurants = _tables()
    loader.publish(users, restaurants)
    loader.close()
    assert reader.fetch(int(users.ids[0]), restaurants.ids[:3]).version == 1
    for leftover in tmp_path.glob("online.db*"):  # rm online.db*, while being read
        leftover.unlink()
    with pytest.raises(FeaturesNotLoaded, match="does not exist"):
        reader.fetch(int(users.ids[0]), restaurants.ids[:3])
    replacement = SQLiteStore(tmp_path / "other.db")
    replacement.publish(users, restaurants)
    replacement.publish(users, restaurants)
    replacement.close()
    os.replace(tmp_path / "other.db", path)  # replaced: the new file is read
    assert reader.fetch(int(users.ids[0]), restaurants.ids[:3]).version == 2
    (tmp_path / "empty.db").write_bytes(b"")
    os.replace(tmp_path / "empty.db", path)  # replaced by a file that is not a loaded store
    with pytest.raises(FeaturesNotLoaded, match="holds no feature tables|not a feature store"):
        reader.fetch(1, [1])
    reader.close()


def test_a_stalled_redis_is_unavailable_within_the_timeout_not_after_retries(tmp_path):
    from devtools.redis_server import RedisServer

    server = RedisServer(str(tmp_path)).start()
    try:
        store = RedisStore(server.url, timeout_s=0.2)
        users, restaurants = _tables()
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
