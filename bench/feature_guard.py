"""What the shrink rule and owned raw bytes cost at the reference's sizes.

- the ids comparison of a 1M-user snapshot against the live one (``dropped_ids``; ``np.isin`` beside it),
  and the whole ``user_features_not_shrunk`` audit (reading the live snapshot's id column included);
- copying a 625,000-row click shard into a published raw day (``copy_owned``) against the hard
  link it replaces, and the crc32 that ``content_version`` adds to every shard version check.

Usage: ``python bench/feature_guard.py [--shards 80] [--repeat 5]`` (writes its data under a temporary
directory; prints one JSON line).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.data.features import USERS, FeatureSnapshot, _digest, publish_snapshot, shrink_audit
from pipeline.data.generate import PRESETS, _write_clicks
from pipeline.data.shrink import ShrinkGuard, dropped_ids
from pipeline.data.sources import content_version, copy_owned
from pipeline_devtools.benchmarks import machine


def best_ms(call, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return round(min(times) * 1000, 2)


def ids_costs(root: Path, repeat: int) -> dict:
    rng = np.random.default_rng(0)
    live = np.arange(1_000_000, dtype=np.int64)
    candidate = np.sort(rng.choice(2_000_000, 1_000_000, replace=False)).astype(np.int64)  # half the ids new
    values = rng.normal(size=(len(live), 30)).astype(np.float32)
    snapshot = FeatureSnapshot("users", live, values, None, _digest(live, values), _digest(live))
    path = root / "users"
    publish_snapshot(snapshot, path, USERS)
    other = FeatureSnapshot("users", candidate, values, None, "other", "other")
    sparse = np.sort(rng.choice(10**12, 1_000_000, replace=False)).astype(np.int64)
    sparse_candidate = np.unique(np.concatenate([sparse[::2], rng.choice(10**12, 500_000)])).astype(np.int64)
    guard = ShrinkGuard(allow=True)
    return {
        "dropped_ids_1m_dense_ms": best_ms(lambda: dropped_ids(live, candidate), repeat),
        "dropped_ids_1m_sparse_ms": best_ms(lambda: dropped_ids(sparse, sparse_candidate), repeat),
        "dropped_ids_1m_same_ms": best_ms(lambda: dropped_ids(live, live.copy()), repeat),
        "searchsorted_1m_dense_ms": best_ms(lambda: int(np.count_nonzero(
            candidate[np.minimum(np.searchsorted(candidate, live), len(candidate) - 1)] != live)), repeat),
        "shrink_audit_1m_ms": best_ms(lambda: shrink_audit(other, path, USERS, guard), repeat),
    }


def copy_costs(root: Path, shards: int, repeat: int) -> dict:
    spec = PRESETS["full"]
    rng = np.random.default_rng(1)
    users, restaurants = rng.normal(size=(spec.users, 10)), rng.normal(size=(spec.restaurants, 10))
    shard = root / "train_00.parquet"
    with tqdm(disable=True) as bar:
        _write_clicks(shard, spec, users, restaurants, 0, 0, bar)
    sources = [shard] + [root / f"train_{i:02d}.parquet" for i in range(1, shards)]
    for other in sources[1:]:
        copy_owned(shard, other)
    out = root / "out"
    out.mkdir()

    def copy_all(link: bool) -> None:
        for i, src in enumerate(sources):
            dst = out / f"part-{i:05d}.parquet"
            dst.unlink(missing_ok=True)
            os.link(src, dst) if link else copy_owned(src, dst)

    def one(link: bool) -> None:
        dst = out / "one.parquet"
        dst.unlink(missing_ok=True)
        os.link(shard, dst) if link else copy_owned(shard, dst)

    how = copy_owned(shard, out / "probe.parquet")
    return {
        "shard_rows": spec.rows_per_file, "shard_bytes": shard.stat().st_size, "copied_by": how,
        "copy_one_shard_ms": best_ms(lambda: one(False), repeat),
        "link_one_shard_ms": best_ms(lambda: one(True), repeat),
        "content_version_one_shard_ms": best_ms(lambda: content_version(shard), repeat),
        "shards": shards,
        "copy_all_shards_ms": best_ms(lambda: copy_all(False), max(1, repeat // 2)),
        "link_all_shards_ms": best_ms(lambda: copy_all(True), max(1, repeat // 2)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=80)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="feature-guard-") as scratch:
        root = Path(scratch)
        result = {"machine": machine(), **ids_costs(root, args.repeat), **copy_costs(root, args.shards, args.repeat)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
