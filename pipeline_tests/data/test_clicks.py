"""Processing raw click files into chunks: the join, bad rows, schemas, duplicates, bad sizes;
and in a process of its own, peak memory independent of the partition's size and a kill -9 mid-partition
that leaves the previous version live."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.data.clicks import count_duplicates, publish_partition
from pipeline.data.features import RESTAURANTS, USERS, read_source_features
from pipeline.data.generate import PRESETS, generate
from pipeline.data.id_index import IdIndex
from pipeline.data.processed_partition import iter_chunks, read_manifest
from pipeline.data.schema import SchemaError
from pipeline.publish import Artifact
from pipeline_devtools.datasets import write_clicks

F30 = [f"f{i:02d}" for i in range(30)]
F10 = F30[:10]


def _process(files, tmp_path, users, restaurants, **kwargs):
    out = tmp_path / "out"
    return publish_partition(files, users, restaurants, out, day="2026-01-01", **kwargs)[0], out


def _gather(out):
    parts = list(iter_chunks(out))
    if not parts:
        return np.empty(0, np.int32), np.empty(0, np.int32), np.empty(0, np.int8)
    return tuple(np.concatenate(p) for p in zip(*parts, strict=True))


def test_join_equals_a_brute_force_pandas_merge(tiny_dataset, tmp_path):
    users = read_source_features(tiny_dataset.user_features, USERS)
    restaurants = read_source_features(tiny_dataset.restaurant_features, RESTAURANTS)
    shard = tiny_dataset.shard_for_day("2026-01-02")
    stats, out = _process([shard], tmp_path, users.index, restaurants.index, chunk_rows=1500,
                          batch_rows=700)
    user_row, restaurant_row, click = _gather(out)
    ours = np.hstack([users.values[user_row], restaurants.values[restaurant_row]])

    raw = pq.read_table(shard).to_pandas()
    user_frame = pq.read_table(tiny_dataset.user_features).to_pandas()
    restaurant_frame = pq.read_table(tiny_dataset.restaurant_features).to_pandas()
    merged = (raw.merge(user_frame, on="user_id", how="inner")
              .merge(restaurant_frame, on="restaurant_id", how="inner", suffixes=("_u", "_r")))
    reference = merged[[f"{c}_u" for c in F10] + F30[10:] + [f"{c}_r" for c in F10]]
    # inner merges keep left order: row for row, the same features and clicks
    np.testing.assert_array_equal(ours, reference.to_numpy(np.float32))
    np.testing.assert_array_equal(click, merged["click"].to_numpy())
    assert stats.rows == len(raw) and stats.dropped_rows == 0
    assert [c["rows"] for c in stats.chunks] == [1500, 1500, 1000]
    assert stats.duplicates == len(raw) - len(raw.drop_duplicates(["user_id", "restaurant_id"]))


def test_bad_rows_are_dropped_counted_and_reconcile(tmp_path):
    users, restaurants = IdIndex(np.arange(10)), IdIndex(np.arange(5))
    rows = [  # (user, restaurant, click, expected fate)
        (1, 1, 1, "kept"), (None, 1, 0, "null"), (2, None, 1, "null"), (3, 2, None, "null"),
        (99, 1, 1, "unknown_user"), (-1, 1, 0, "unknown_user"), (2, 5, 1, "unknown_restaurant"),
        (99, 99, 7, "unknown_user"), (4, 4, 2, "invalid_click"), (4, 4, -1, "invalid_click"),
        (1, 1, 1, "kept"), (1, 1, 0, "kept"), (9, 0, 0, "kept"),
    ]
    path = write_clicks(tmp_path / "bad.parquet",
                        {"user_id": [r[0] for r in rows], "restaurant_id": [r[1] for r in rows],
                         "click": [r[2] for r in rows]},
                        pa.schema([("user_id", pa.int64()), ("restaurant_id", pa.int32()),
                                   ("click", pa.int64())]))
    stats, out = _process([path], tmp_path, users, restaurants, batch_rows=4)
    fates = pd.Series([r[3] for r in rows]).value_counts().to_dict()
    assert stats.dropped == {k: fates.get(k, 0) for k in stats.dropped}
    assert stats.rows == fates["kept"] and stats.raw_rows == len(rows)
    assert stats.raw_rows == stats.rows + stats.dropped_rows
    assert stats.duplicates == 2  # (1, 1) three times
    user_row, restaurant_row, click = _gather(out)
    kept = [r for r in rows if r[3] == "kept"]
    assert user_row.tolist() == [r[0] for r in kept]
    assert click.tolist() == [r[2] for r in kept]
    manifest = read_manifest(out)
    assert manifest["dropped_rows"] == stats.dropped_rows and manifest["day"] == "2026-01-01"


def test_empty_partition_has_zero_rows(tmp_path):
    path = write_clicks(tmp_path / "empty.parquet", {"user_id": [], "restaurant_id": [], "click": []},
                        pa.schema([("user_id", pa.int64()), ("restaurant_id", pa.int64()),
                                   ("click", pa.int64())]))
    stats, out = _process([path], tmp_path, IdIndex(np.arange(3)), IdIndex(np.arange(3)))
    assert (stats.rows, stats.raw_rows, stats.chunks, stats.duplicates) == (0, 0, [], 0)
    assert read_manifest(out)["rows"] == 0 and len(_gather(out)[0]) == 0


@pytest.mark.parametrize("columns, message", [
    ({"user_id": [1], "restaurant_id": [1]}, r"bad\.parquet: missing column 'click'"),
    ({"user_id": [1], "restaurant_id": [1], "click": [1.0]},
     r"bad\.parquet: column 'click' has type double, expected integer"),
    ({"user_id": ["u1"], "restaurant_id": [1], "click": [1]},
     r"bad\.parquet: column 'user_id' has type string, expected integer"),
])
def test_schema_errors_name_file_and_column_and_write_nothing(tmp_path, columns, message):
    good = write_clicks(tmp_path / "good.parquet", {"user_id": [1], "restaurant_id": [1], "click": [1]})
    bad = write_clicks(tmp_path / "bad.parquet", columns)
    with pytest.raises(SchemaError, match=message):
        _process([good, bad], tmp_path, IdIndex(np.arange(3)), IdIndex(np.arange(3)))
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_duplicate_count_is_exact_whatever_the_number_of_passes(tmp_path):
    rng = np.random.default_rng(0)
    n = 50_000
    path = write_clicks(tmp_path / "d.parquet", {"user_id": rng.integers(0, 300, n),
                                                 "restaurant_id": rng.integers(0, 200, n),
                                                 "click": rng.integers(0, 2, n)})
    stats, out = _process([path], tmp_path, IdIndex(np.arange(300)), IdIndex(np.arange(200)),
                          chunk_rows=7_000)
    raw = pq.read_table(path).to_pandas()
    expected = n - len(raw.drop_duplicates(["user_id", "restaurant_id"]))
    assert stats.duplicates == expected > 0
    assert count_duplicates(out, stats.chunks, 200, pass_bytes=30_000) == expected


@pytest.mark.parametrize("sizes", [{"chunk_rows": 0}, {"batch_rows": -5}])
def test_non_positive_sizes_are_refused_before_any_work(tmp_path, sizes):
    path = write_clicks(tmp_path / "c.parquet", {"user_id": [1], "restaurant_id": [1], "click": [1]})
    [(name, value)] = sizes.items()
    with pytest.raises(ValueError, match=f"{name} must be a positive integer, got {value}"):
        _process([path], tmp_path, IdIndex(np.arange(3)), IdIndex(np.arange(3)), **sizes)
    assert not list(tmp_path.glob("*out*"))


SCRIPT = Path(__file__).parents[1] / "scripts" / "process_partition.py"
SPEC = dataclasses.replace(PRESETS["tiny"], users=1_000_000, restaurants=100_000, train_files=1,
                           test_files=0, rows_per_file=2_000_000, requests=0)


@pytest.fixture(scope="module")
def big_shard(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("big")
    generate(root, SPEC, progress=False)
    return root / "train" / "train_00.parquet"


def _command(out: Path, shard: Path, repeat: int) -> list[str]:
    return [sys.executable, str(SCRIPT), str(out), str(SPEC.users), str(SPEC.restaurants),
            *[str(shard)] * repeat]


def _run(out: Path, shard: Path, repeat: int) -> dict:
    done = subprocess.run(_command(out, shard, repeat), capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_peak_rss_does_not_grow_with_partition_size(big_shard, tmp_path):
    # Memory is bounded by the chunk and batch buffers plus one duplicate-counting pass
    # (DUPLICATE_PASS_BYTES = 16M keys): beyond that, twice the rows must not cost more memory.
    small = _run(tmp_path / "small", big_shard, 8)    # 16M rows
    large = _run(tmp_path / "large", big_shard, 16)   # 32M rows: ~770 MB of raw columns
    assert (small["rows"], large["rows"]) == (16_000_000, 32_000_000)
    assert large["duplicates"] >= 30_000_000  # every row of the repeats is a repeat
    growth = large["peak_rss_mb"] - small["peak_rss_mb"]
    assert growth < 48, (small, large)
    assert large["peak_rss_mb"] < 512, large


@pytest.mark.slow
def test_kill_9_mid_partition_leaves_the_previous_version_and_rerun_succeeds(big_shard, tmp_path):
    out = tmp_path / "date=2026-01-01"
    assert _run(out, big_shard, 1)["rows"] == 2_000_000
    before = Artifact(out).live_version()
    process = subprocess.Popen(_command(out, big_shard, 6), stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".date=2026-01-01.versions/.staging-*/chunk-*.arrow")):
        assert time.monotonic() < deadline and process.poll() is None, "no chunk was written"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert Artifact(out).live_version() == before  # the partial candidate never became visible
    assert read_manifest(out)["rows"] == 2_000_000
    assert list(tmp_path.glob(".date=2026-01-01.versions/.staging-*"))  # what the killed run left, hidden
    assert _run(out, big_shard, 2)["rows"] == 4_000_000
    assert read_manifest(out)["rows"] == 4_000_000
    assert not list(tmp_path.glob(".date=2026-01-01.versions/.staging-*"))  # removed by the next write
    assert sorted(p.name for p in tmp_path.iterdir()) == [".date=2026-01-01.lock", ".date=2026-01-01.versions",
                                                          "date=2026-01-01"]
