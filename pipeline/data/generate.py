"""Synthetic dataset in exactly the reference format (files, columns, types and statistics).

Features: users around 10 cluster centres in 30 dimensions, restaurants around 10 centres in 10
dimensions (centres ~ N(0, 2²), members ~ N(centre, 0.1²)), stored as float32 values in float64
columns. Clicks: uniform (user, restaurant) pairs with
``click ~ Bernoulli(sigmoid(Σ_{k<10} user_fk · restaurant_fk + N(0, 0.1²)))``.

Every random stream is keyed by (seed, role, file, block), so a file's content does not depend on
how many other files are made or on the block size, and the work is vectorised block by block with
memory bounded by the block size (and the feature tables).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.atomic import staged_file
from pipeline.data.schema import (
    LAT_RANGE,
    LON_RANGE,
    N_RESTAURANT_FEATURES,
    N_USER_FEATURES,
    RESTAURANT_FEATURE_COLUMNS,
    USER_FEATURE_COLUMNS,
)

N_CLUSTERS = 10
CENTRE_STD = 2.0
MEMBER_STD = 0.1
LOGIT_NOISE_STD = 0.1
N_SIGNAL_FEATURES = 10  # user f00-f09 meet restaurant f00-f09; user f10-f29 are noise
BLOCK_ROWS = 1 << 20

# Stream roles: fixed numbers, so adding a role never shifts another's random numbers.
_CENTRES, _USERS, _RESTAURANTS, _TRAIN, _TEST, _REQUESTS = range(6)


@dataclass(frozen=True)
class DatasetSpec:
    """Sizes of a generated dataset. ``rows_per_file`` applies to train and test files alike."""

    users: int
    restaurants: int
    train_files: int
    test_files: int
    rows_per_file: int
    requests: int
    candidates: int = 1000
    seed: int = 60  # its cluster centres give the reference click rate 0.46 and Bayes accuracy 0.957

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value < 0 or (value == 0 and field.name in ("users", "restaurants")):
                raise ValueError(f"{field.name} must be positive, got {value}")
        if self.candidates > self.restaurants:
            raise ValueError(
                f"candidates ({self.candidates}) cannot exceed restaurants ({self.restaurants})"
            )
        if self.requests > self.users:
            raise ValueError(f"requests ({self.requests}) cannot exceed users ({self.users})")

    @property
    def train_rows(self) -> int:
        return self.train_files * self.rows_per_file


PRESETS: dict[str, DatasetSpec] = {
    # CI-sized: seconds to make and to process.
    "tiny": DatasetSpec(users=5_000, restaurants=2_000, train_files=8, test_files=2,
                        rows_per_file=10_000, requests=200),
    # The demo: a few million rows.
    "small": DatasetSpec(users=100_000, restaurants=20_000, train_files=16, test_files=2,
                         rows_per_file=200_000, requests=2_000),
    # The reference workload.
    "full": DatasetSpec(users=1_000_000, restaurants=100_000, train_files=80, test_files=8,
                        rows_per_file=625_000, requests=10_000),
}


def _rng(seed: int, role: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(role, *key)))


def cluster_centres(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """User (10×30) and restaurant (10×10) cluster centres; they alone set the click rate."""
    rng = _rng(seed, _CENTRES)
    users = rng.normal(0.0, CENTRE_STD, (N_CLUSTERS, N_USER_FEATURES))
    restaurants = rng.normal(0.0, CENTRE_STD, (N_CLUSTERS, N_RESTAURANT_FEATURES))
    return users, restaurants


def _members(rng: np.random.Generator, centres: np.ndarray, n: int) -> np.ndarray:
    cluster = rng.integers(0, N_CLUSTERS, n)
    noise = rng.normal(0.0, MEMBER_STD, (n, centres.shape[1]))
    return (centres[cluster] + noise).astype(np.float32)


def make_features(spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """User features (users×30), restaurant features (restaurants×10), locations (restaurants×2)."""
    user_centres, restaurant_centres = cluster_centres(spec.seed)
    users = _members(_rng(spec.seed, _USERS), user_centres, spec.users)
    rng = _rng(spec.seed, _RESTAURANTS)
    restaurants = _members(rng, restaurant_centres, spec.restaurants)
    locations = np.column_stack(
        [rng.uniform(*LAT_RANGE, spec.restaurants), rng.uniform(*LON_RANGE, spec.restaurants)]
    )
    return users, restaurants, locations


def click_probability(user_signal: np.ndarray, restaurant_signal: np.ndarray,
                      noise: np.ndarray) -> np.ndarray:
    """sigmoid(Σ_k u_k·r_k + noise), row-wise."""
    logit = np.einsum("ij,ij->i", user_signal, restaurant_signal) + noise
    return 1.0 / (1.0 + np.exp(-logit))


def click_block(spec: DatasetSpec, user_signal: np.ndarray, restaurant_signal: np.ndarray,
                role: int, file: int, block: int, rows: int) -> pa.RecordBatch:
    """One block of click rows for file ``file`` of stream ``role``."""
    rng = _rng(spec.seed, role, file, block)
    user = rng.integers(0, spec.users, rows, dtype=np.int64)
    restaurant = rng.integers(0, spec.restaurants, rows, dtype=np.int64)
    noise = rng.normal(0.0, LOGIT_NOISE_STD, rows).astype(np.float32)
    p = click_probability(user_signal[user], restaurant_signal[restaurant], noise)
    click = (rng.random(rows, dtype=np.float32) < p).astype(np.int64)
    return pa.record_batch({"user_id": user, "restaurant_id": restaurant, "click": click})


def _write_features(path: Path, id_column: str, ids: np.ndarray, columns: dict[str, np.ndarray]) -> None:
    table = pa.table({id_column: ids, **{k: v.astype(np.float64) for k, v in columns.items()}})
    with staged_file(path) as tmp:
        pq.write_table(table, tmp, write_page_checksum=True)


def _write_clicks(path: Path, spec: DatasetSpec, user_signal: np.ndarray,
                  restaurant_signal: np.ndarray, role: int, file: int, bar: tqdm) -> None:
    schema = pa.schema([("user_id", pa.int64()), ("restaurant_id", pa.int64()), ("click", pa.int64())])
    with staged_file(path) as tmp, pq.ParquetWriter(tmp, schema, use_dictionary=["click"],
                                                           write_page_checksum=True) as writer:
        for block, start in enumerate(range(0, spec.rows_per_file, BLOCK_ROWS)):
            rows = min(BLOCK_ROWS, spec.rows_per_file - start)
            writer.write_batch(click_block(spec, user_signal, restaurant_signal, role, file, block, rows))
            bar.update(rows)
        if spec.rows_per_file == 0:
            writer.write_table(schema.empty_table())


def make_requests(spec: DatasetSpec) -> pa.Table:
    """Distinct users, each with ``candidates`` distinct restaurants and a location in the box."""
    rng = _rng(spec.seed, _REQUESTS)
    n = spec.requests
    users = rng.choice(spec.users, n, replace=False).astype(np.int64)
    candidates = np.empty((n, spec.candidates), dtype=np.int64)
    for i in range(n):
        candidates[i] = rng.choice(spec.restaurants, spec.candidates, replace=False)
    offsets = pa.array(np.arange(0, n * spec.candidates + 1, spec.candidates, dtype=np.int32))
    return pa.table({
        "user_id": users,
        "latitude": rng.uniform(*LAT_RANGE, n),
        "longitude": rng.uniform(*LON_RANGE, n),
        "candidate_restaurant_ids": pa.ListArray.from_arrays(offsets, pa.array(candidates.ravel())),
        "size": rng.integers(1, 11, n, dtype=np.int64) * 100,
        "max_dist": rng.integers(5, 11, n, dtype=np.int64) * 1000,
        "sort_dist": rng.random(n) < 0.5,
    })


def generate(out: str | Path, spec: DatasetSpec, progress: bool = True) -> dict:
    """Write a reference-format dataset to ``out``; return a summary of what was written."""
    out = Path(out)
    users, restaurants, locations = make_features(spec)
    _write_features(out / "user_features.parquet", "user_id", np.arange(spec.users, dtype=np.int64),
                    dict(zip(USER_FEATURE_COLUMNS, users.T, strict=True)))
    _write_features(out / "restaurant_features.parquet", "restaurant_id",
                    np.arange(spec.restaurants, dtype=np.int64),
                    {"latitude": locations[:, 0], "longitude": locations[:, 1],
                     **dict(zip(RESTAURANT_FEATURE_COLUMNS, restaurants.T, strict=True))})
    user_signal = np.ascontiguousarray(users[:, :N_SIGNAL_FEATURES])
    total = (spec.train_files + spec.test_files) * spec.rows_per_file
    with tqdm(total=total, unit="rows", unit_scale=True, desc="clicks", disable=not progress,
              file=sys.stderr) as bar:
        for role, folder, count in ((_TRAIN, "train", spec.train_files), (_TEST, "test", spec.test_files)):
            for file in range(count):
                _write_clicks(out / folder / f"{folder}_{file:02d}.parquet", spec, user_signal,
                              restaurants, role, file, bar)
    with staged_file(out / "requests.parquet") as tmp:
        pq.write_table(make_requests(spec), tmp)
    return {"out": str(out), **dataclasses.asdict(spec), "train_rows": spec.train_rows,
            "test_rows": spec.test_files * spec.rows_per_file}
