"""Feature files: validation, float32 snapshots, id resolution."""

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.audits import Rejected
from pipeline.data.features import (
    RESTAURANTS,
    USERS,
    IdIndex,
    load_id_index,
    load_snapshot,
    publish_snapshot,
    read_source_features,
    snapshot_audits,
)
from pipeline.data.schema import SchemaError
from pipeline.publish import Artifact


@pytest.mark.parametrize("ids", [np.arange(1000), np.array([5, 9, 10, 400, 7_000_000_000]),
                                 np.array([-3, 0, 2]), np.array([], dtype=np.int64)])
def test_id_index_agrees_with_a_dict(ids):
    index = IdIndex(ids)
    probe = np.array([-5, -3, 0, 1, 2, 5, 9, 10, 11, 399, 400, 999, 1000, 7_000_000_000, 2**62])
    truth = {int(v): i for i, v in enumerate(ids)}
    assert index.rows(probe).tolist() == [truth.get(int(v), -1) for v in probe]


def test_id_index_needs_sorted_unique_ids():
    with pytest.raises(ValueError, match="sorted"):
        IdIndex(np.array([3, 1, 2]))


def test_snapshot_is_sorted_float32_and_round_trips(tiny_dataset, tmp_path):
    source = pq.read_table(tiny_dataset.user_features).to_pandas()
    shuffled = tmp_path / "users.parquet"
    # pandas writes its index metadata (and here a non-default index column): readers ignore it
    source.sample(frac=1.0, random_state=0).to_parquet(shuffled)
    assert "__index_level_0__" in pq.read_schema(shuffled).names
    snapshot = read_source_features(shuffled, USERS)
    assert snapshot.values.dtype == np.float32 and snapshot.values.flags.c_contiguous
    assert snapshot.ids.tolist() == list(range(len(source)))
    np.testing.assert_array_equal(snapshot.values, source[[f"f{i:02d}" for i in range(30)]]
                                  .to_numpy(np.float32))
    path = tmp_path / "users"
    publish_snapshot(snapshot, path, USERS)
    loaded = load_snapshot(path, USERS)
    np.testing.assert_array_equal(loaded.values, snapshot.values)
    assert loaded.version == snapshot.version and loaded.ids_version == snapshot.ids_version
    index, ids_version = load_id_index(path, USERS)
    assert ids_version == snapshot.ids_version and index.size == len(source)
    # The same ids with other values: same ids_version, another version.
    changed = source.copy()
    changed["f00"] += 1.0
    changed.to_parquet(tmp_path / "changed.parquet")
    other = read_source_features(tmp_path / "changed.parquet", USERS)
    assert other.ids_version == snapshot.ids_version and other.version != snapshot.version


def test_restaurant_snapshot_keeps_float64_locations(tiny_dataset, tmp_path):
    snapshot = read_source_features(tiny_dataset.restaurant_features, RESTAURANTS)
    source = pq.read_table(tiny_dataset.restaurant_features).to_pandas()
    np.testing.assert_array_equal(snapshot.locations[:, 0], source["latitude"].to_numpy())
    assert snapshot.values.shape == (len(source), 10) and len(snapshot.invalid_location_rows()) == 0
    publish_snapshot(snapshot, tmp_path / "restaurants", RESTAURANTS)
    np.testing.assert_array_equal(load_snapshot(tmp_path / "restaurants", RESTAURANTS).locations,
                                  snapshot.locations)


def _users_frame(n=4):
    frame = pd.DataFrame({"user_id": np.arange(n)})
    for i in range(30):
        frame[f"f{i:02d}"] = np.linspace(0, 1, n)
    return frame


def test_missing_or_mistyped_column_names_file_and_column(tmp_path):
    frame = _users_frame().drop(columns=["f17"])
    frame.to_parquet(tmp_path / "a.parquet")
    with pytest.raises(SchemaError, match=r"a\.parquet: missing column 'f17'"):
        read_source_features(tmp_path / "a.parquet", USERS)
    frame = _users_frame()
    frame["f03"] = frame["f03"].astype(str)
    frame.to_parquet(tmp_path / "b.parquet")
    with pytest.raises(SchemaError, match=r"b\.parquet: column 'f03' has type .*expected float"):
        read_source_features(tmp_path / "b.parquet", USERS)
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        read_source_features(tmp_path / "nope.parquet", USERS)


def test_duplicate_or_null_ids_are_errors(tmp_path):
    frame = _users_frame()
    frame.loc[2, "user_id"] = 1
    frame.to_parquet(tmp_path / "dup.parquet")
    with pytest.raises(ValueError, match=r"dup\.parquet: column 'user_id' has 1 duplicate ids \(first: 1\)"):
        read_source_features(tmp_path / "dup.parquet", USERS)
    frame = _users_frame().astype({"user_id": "Int64"})
    frame.loc[0, "user_id"] = None
    frame.to_parquet(tmp_path / "null.parquet")
    with pytest.raises(ValueError, match="1 null ids"):
        read_source_features(tmp_path / "null.parquet", USERS)


def test_nan_inf_null_and_overflow_values_are_counted_per_column(tmp_path):
    frame = _users_frame()
    frame.loc[0, "f01"] = np.nan
    frame.loc[1, "f01"] = np.inf
    frame.loc[2, "f29"] = 1e300  # not representable as float32
    frame["f05"] = frame["f05"].astype("Float64")
    frame.loc[3, "f05"] = None
    frame.to_parquet(tmp_path / "bad.parquet")
    [audit] = snapshot_audits(read_source_features(tmp_path / "bad.parquet", USERS), USERS)
    assert not audit.passed and audit.metadata["columns_with_non_finite"] == {"f01": 2, "f05": 1, "f29": 1}
    assert "first: user_id 0, f01 = nan" in audit.description


def test_a_snapshot_with_a_nan_is_rejected_and_the_good_one_stays_live(tiny_dataset, tmp_path):
    path = tmp_path / "users"
    good = read_source_features(tiny_dataset.user_features, USERS)
    publish_snapshot(good, path, USERS)
    frame = pq.read_table(tiny_dataset.user_features).to_pandas()
    frame.loc[7, "f12"] = np.nan
    frame.to_parquet(tmp_path / "poisoned.parquet")
    with pytest.raises(Rejected, match=r"user_features_are_finite: 1 non-finite values .* user_id 7, f12 = nan"):
        publish_snapshot(read_source_features(tmp_path / "poisoned.parquet", USERS), path, USERS)
    live = load_snapshot(path, USERS)
    assert live.version == good.version and np.isfinite(live.values).all()
    assert Artifact(path).versions() == [good.version]


def test_bad_restaurant_locations_are_rejected_naming_the_row(tiny_dataset, tmp_path):
    frame = pq.read_table(tiny_dataset.restaurant_features).to_pandas()
    frame.loc[3, "latitude"] = 95.0
    frame.to_parquet(tmp_path / "r.parquet")
    with pytest.raises(Rejected, match=r"locations_valid: 1 rows .* restaurant_id 3 at \(95\.0"):
        publish_snapshot(read_source_features(tmp_path / "r.parquet", RESTAURANTS), tmp_path / "restaurants",
                         RESTAURANTS)
    assert Artifact(tmp_path / "restaurants").live_version() is None
