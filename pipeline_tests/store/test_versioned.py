"""Versioned loads on a real SQLite file and a real redis-server: a new version replaces the old one whole,
bad and shrinking tables are refused, a killed loader leaves the previous version serving, and overlapping
loaders both complete."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.audits import Rejected
from pipeline.data.shrink import ShrinkGuard
from pipeline.store.base import SHRINK_CHECK, FeatureTable
from pipeline_devtools.synthetic import feature_tables

SCRIPT = Path(__file__).parents[1] / "scripts" / "load_store.py"


def test_a_new_version_replaces_values_removes_stale_entities_and_prunes(store):
    users, restaurants = feature_tables()
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


def test_bad_tables_are_refused_and_nothing_is_published(store):
    users, restaurants = feature_tables()
    store.publish(users, restaurants)
    twin = FeatureTable(np.array([5, 5, 6]), np.zeros((3, 30), np.float32), "dup")
    with pytest.raises(ValueError, match=r"users \(snapshot dup\): ids must be unique and sorted"):
        store.publish(twin, restaurants)
    narrow = FeatureTable(users.ids, users.values[:, :29], "narrow")
    with pytest.raises(ValueError, match=r"users: expected 500 rows of 30 features, got \(500, 29\)"):
        store.publish(narrow, restaurants)
    assert store.live().number == 1 and [v.number for v in store.versions()] == [1]


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


# ----- the online store (both backends)


def test_the_store_refuses_an_empty_load_even_when_allowed_and_keeps_the_live_version(store):
    users, restaurants = feature_tables()
    live = store.publish(users, restaurants)
    empty = FeatureTable(users.ids[:0], users.values[:0], "empty")
    refused = r"online_features_not_shrunk: users: the candidate has 0 rows \(the live version has 500\)"
    with pytest.raises(Rejected, match=refused):
        store.publish(empty, restaurants)
    with pytest.raises(Rejected, match=refused):
        store.publish(empty, restaurants, guard=ShrinkGuard(allow=True))
    with pytest.raises(Rejected, match="restaurants: the candidate has 0 rows"):
        store.publish(users, FeatureTable(restaurants.ids[:0], restaurants.values[:0], "empty"))
    assert store.live().number == live.number and [v.number for v in store.versions()] == [live.number]
    assert store.fetch(int(users.ids[3]), [10]).user is not None


def test_the_store_refuses_a_shrinking_load_unless_allowed(store):
    users, restaurants = feature_tables()
    live = store.publish(users, restaurants)
    tenth = FeatureTable(users.ids[::10], users.values[::10], "tenth")
    with pytest.raises(Rejected) as rejected:
        store.publish(tenth, restaurants)
    [audit] = rejected.value.failed
    assert audit.name == SHRINK_CHECK and audit.metadata["users_candidate_rows"] == 50
    assert audit.metadata["users_live_rows"] == 500 and audit.metadata["restaurants_live_rows"] == 300
    assert "users: 50 rows, the live version has 500 (a fall of 90.00%" in audit.description
    assert store.live().number == live.number and store.fetch(int(users.ids[3]), [10]).user is not None
    within = FeatureTable(users.ids[:480], users.values[:480], "within")  # 4% fewer: allowed
    assert store.publish(within, restaurants).users_rows == 480
    allowed = store.publish(tenth, restaurants, guard=ShrinkGuard(allow=True))
    assert allowed.users_rows == 50 and {a.name: a.passed for a in allowed.audits} == {
        "online_features_complete": True, SHRINK_CHECK: True}
    assert store.fetch(int(users.ids[3]), [10]).user is None  # the deliberate shrink is live
