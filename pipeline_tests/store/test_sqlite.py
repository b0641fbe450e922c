"""The SQLite store: every row looked up by its full key, and readers that follow the file at the path
(deleted, replaced)."""

import os

import pytest

from pipeline.store.base import FeaturesNotLoaded
from pipeline.store.sqlite import _FETCH, SQLiteStore
from pipeline_devtools.synthetic import feature_tables


def test_sqlite_reads_look_up_every_row_by_its_full_key(tmp_path):
    store = SQLiteStore(tmp_path / "online.db")
    plan = [row[3] for row in store._connection(create=True).execute("EXPLAIN QUERY PLAN " + _FETCH, (1, "[1, 2]"))]
    store.close()
    assert "SEARCH user_features USING PRIMARY KEY (v=? AND id=?)" in plan
    assert "SEARCH r USING PRIMARY KEY (v=? AND id=?)" in plan and not [p for p in plan if p.startswith("SCAN r")]


def test_sqlite_readers_follow_the_file_at_the_path(tmp_path):
    path = tmp_path / "online.db"
    reader = SQLiteStore(path, timeout_s=0.2)
    with pytest.raises(FeaturesNotLoaded, match="does not exist"):  # a reader never creates the file
        reader.fetch(1, [1])
    assert not path.exists() and reader.live() is None
    loader = SQLiteStore(path)
    users, restaurants = feature_tables()
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
