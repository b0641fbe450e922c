"""The generator writes exactly the reference format with the reference statistics."""

import dataclasses
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from pipeline.data.generate import (
    PRESETS,
    DatasetSpec,
    click_probability,
    cluster_centres,
    generate,
    make_features,
)
from pipeline.data.schema import LAT_RANGE, LON_RANGE
from pipeline_devtools.datasets import TINY

F30 = [f"f{i:02d}" for i in range(30)]
F10 = F30[:10]


def test_files_and_schemas_are_exactly_the_reference(tiny_dataset):
    root = tiny_dataset.root
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == ["requests.parquet", "restaurant_features.parquet", "test/test_00.parquet",
                     "train/train_00.parquet", "train/train_01.parquet", "train/train_02.parquet",
                     "user_features.parquet"]
    expect = {
        "user_features.parquet": [("user_id", pa.int64())] + [(c, pa.float64()) for c in F30],
        "restaurant_features.parquet": [("restaurant_id", pa.int64()), ("latitude", pa.float64()),
                                        ("longitude", pa.float64())] + [(c, pa.float64()) for c in F10],
        "train/train_00.parquet": [("user_id", pa.int64()), ("restaurant_id", pa.int64()),
                                   ("click", pa.int64())],
        "test/test_00.parquet": [("user_id", pa.int64()), ("restaurant_id", pa.int64()),
                                 ("click", pa.int64())],
        "requests.parquet": [("user_id", pa.int64()), ("latitude", pa.float64()),
                             ("longitude", pa.float64()),
                             ("candidate_restaurant_ids", pa.list_(pa.int64())),
                             ("size", pa.int64()), ("max_dist", pa.int64()), ("sort_dist", pa.bool_())],
    }
    for name, fields in expect.items():
        schema = pq.read_schema(root / name)
        assert [(f.name, f.type) for f in schema] == fields, name


def test_row_counts_ids_and_feature_statistics(tiny_dataset):
    root = tiny_dataset.root
    users = pq.read_table(root / "user_features.parquet").to_pandas()
    restaurants = pq.read_table(root / "restaurant_features.parquet").to_pandas()
    assert users["user_id"].tolist() == list(range(TINY.users))
    assert restaurants["restaurant_id"].tolist() == list(range(TINY.restaurants))
    values = users[F30].to_numpy()
    assert np.array_equal(values, values.astype(np.float32).astype(np.float64))  # float32 values
    assert restaurants["latitude"].between(*LAT_RANGE).all()
    assert restaurants["longitude"].between(*LON_RANGE).all()
    # Every user sits within N(0, 0.1²) noise of one of 10 centres (30 dims: distance ≈ 0.55).
    user_centres, _ = cluster_centres(TINY.seed)
    distance = np.linalg.norm(values[:, None, :] - user_centres[None], axis=2)
    assert distance.min(axis=1).max() < 1.0
    members = np.bincount(distance.argmin(axis=1), minlength=10)
    assert members.min() > TINY.users / 10 * 0.7  # clusters drawn uniformly
    assert abs(np.std(user_centres) - 2.0) < 0.5
    for i in range(3):
        assert pq.read_metadata(root / f"train/train_{i:02d}.parquet").num_rows == TINY.rows_per_file


def test_click_rate_matches_the_reference_and_the_click_model(tiny_dataset):
    root = tiny_dataset.root
    clicks = pq.read_table(root / "train/train_00.parquet").to_pandas()
    assert set(clicks["click"].unique()) <= {0, 1}
    assert clicks["user_id"].between(0, TINY.users - 1).all()
    assert clicks["restaurant_id"].between(0, TINY.restaurants - 1).all()
    rate = clicks["click"].mean()
    assert abs(rate - 0.462) < 0.03  # the reference's click rate, from the default seed's centres
    # The empirical rate agrees with the model's own expected probability.
    users, restaurants, _ = make_features(TINY)
    p = click_probability(users[clicks["user_id"], :10], restaurants[clicks["restaurant_id"]],
                          np.zeros(len(clicks), np.float32))
    assert abs(rate - p.mean()) < 3 * np.sqrt(0.25 / len(clicks)) + 0.005
    # Bayes-optimal accuracy (predict the likelier outcome) is near the reference's 0.957.
    assert 0.93 < np.maximum(p, 1 - p).mean() < 0.98


def test_requests_follow_the_reference(tiny_dataset):
    requests = pq.read_table(tiny_dataset.root / "requests.parquet").to_pandas()
    assert len(requests) == TINY.requests
    assert requests["user_id"].is_unique
    for candidates in requests["candidate_restaurant_ids"]:
        assert len(candidates) == TINY.candidates == len(set(candidates))
    assert set(requests["size"]) <= set(range(100, 1001, 100))
    assert set(requests["max_dist"]) <= set(range(5000, 10001, 1000))
    assert requests["latitude"].between(*LAT_RANGE).all()
    assert set(requests["sort_dist"]) <= {True, False}


def test_same_seed_same_data_and_files_do_not_depend_on_file_count(tmp_path):
    small = dataclasses.replace(TINY, train_files=1, test_files=0, requests=10)
    generate(tmp_path / "a", small, progress=False)
    generate(tmp_path / "b", dataclasses.replace(small, train_files=2), progress=False)
    generate(tmp_path / "c", dataclasses.replace(small, seed=1), progress=False)
    a = pq.read_table(tmp_path / "a/train/train_00.parquet")
    assert a.equals(pq.read_table(tmp_path / "b/train/train_00.parquet"))
    assert not a.equals(pq.read_table(tmp_path / "c/train/train_00.parquet"))


def test_spec_rejects_impossible_sizes():
    with pytest.raises(ValueError, match="candidates"):
        dataclasses.replace(PRESETS["tiny"], restaurants=10)
    with pytest.raises(ValueError, match="users must be positive"):
        DatasetSpec(users=0, restaurants=1, train_files=1, test_files=0, rows_per_file=1,
                    requests=0, candidates=1)


def test_cli_generate_with_overrides(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["generate", "--out", str(out), "--preset", "tiny", "--train-files", "2",
                 "--test-files", "1", "--rows-per-file", "100", "--requests", "5",
                 "--seed", "3", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["train_rows"] == 200 and summary["seed"] == 3
    assert pq.read_metadata(out / "train/train_01.parquet").num_rows == 100
    assert main(["days", "--data", str(out), "--format", "range"]) == 0
    assert capsys.readouterr().out.strip() == "2026-01-01...2026-01-02"
    assert main(["generate", "--out", str(out), "--restaurants", "5", "--quiet"]) == 2
