"""Benchmark: process every click partition of a reference dataset, against the naive baseline.

    python bench/processing.py --data DIR [--baseline-rows 5000000] [--files-per-partition K]
                               [--compare-with CHECKOUT] [--rounds N]

Ours: each train shard through the same code as the ``processed_clicks`` asset (stream, validate,
resolve ids, fixed-size chunks, duplicate count), in a fresh process so its peak RSS is its own,
into a new warehouse whose feature snapshots the same code made first (``snapshot_seconds``).
Baseline: the reference's approach (pandas read + concat of all files + two merges + to_numpy), in
its own process, on as many whole files as fit in ``--baseline-rows`` (it needs ~14 GB at 50M rows).
``--files-per-partition K`` groups K shards into one partition (80: the whole dataset as one
partition), to show that peak RSS does not depend on the partition count.
``--compare-with CHECKOUT`` also measures the ``pipeline`` package of another checkout (e.g. a
``git worktree add /tmp/baseline <commit>``), reported under ``before``; ``--rounds N`` runs each
side N times, alternating which goes first. The top-level figures are ours' median run (by
seconds), ``runs`` every run's time, rate and peak RSS.
Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

if "--code" in sys.argv:  # another checkout's code (--compare-with): its pipeline package comes first
    sys.path.insert(0, sys.argv[sys.argv.index("--code") + 1])

from pipeline_devtools.benchmarks import machine, run_role  # noqa: E402

TIMED = ("seconds", "rows_per_s", "peak_rss_mb", "snapshot_seconds")


def ours(data: Path, warehouse: Path, files_per_partition: int) -> dict:
    import pipeline
    from pipeline.data.clicks import publish_partition
    from pipeline.data.features import RESTAURANTS, USERS, load_id_index
    from pipeline.data.layout import ReferenceDataset, Warehouse
    from pipeline_devtools.process_metrics import peak_rss_mb

    layout = Warehouse(warehouse)
    dataset = ReferenceDataset(data, dt.date(2026, 1, 1))
    started = time.perf_counter()
    users, _ = load_id_index(layout.user_features, USERS)
    restaurants, _ = load_id_index(layout.restaurant_features, RESTAURANTS)
    rows = raw = dropped = duplicates = size = 0
    days = dataset.days()
    groups = [days[i:i + files_per_partition] for i in range(0, len(days), files_per_partition)]
    for group in groups:
        stats, _ = publish_partition([dataset.shard_for_day(d) for d in group], users, restaurants,
                                  layout.processed_clicks(group[0]), day=group[0])
        rows, raw, size = rows + stats.rows, raw + stats.raw_rows, size + stats.bytes
        dropped, duplicates = dropped + stats.dropped_rows, duplicates + stats.duplicates
    seconds = time.perf_counter() - started
    return {"rows": rows, "raw_rows": raw, "dropped_rows": dropped, "duplicates": duplicates,
            "partitions": len(groups), "seconds": round(seconds, 3),
            "rows_per_s": round(rows / seconds), "processed_bytes": size,
            "bytes_per_row_on_disk": round(size / max(rows, 1), 2), "peak_rss_mb": round(peak_rss_mb(), 1),
            "code": str(Path(pipeline.__file__).resolve().parent.parent)}


def snapshots(data: Path, warehouse: Path) -> dict:
    from pipeline.data.layout import ReferenceDataset, Warehouse
    from pipeline_devtools.warehouse_build import build_from_reference

    started = time.perf_counter()
    build_from_reference(ReferenceDataset(data, dt.date(2026, 1, 1)), Warehouse(warehouse), days=0)
    return {"snapshot_seconds": round(time.perf_counter() - started, 3)}


def baseline(data: Path, max_rows: int) -> dict:
    import pandas as pd
    import pyarrow.parquet as pq

    from pipeline_devtools.process_metrics import peak_rss_mb

    files, rows = [], 0
    for path in sorted((data / "train").glob("train_*.parquet")):
        n = pq.read_metadata(path).num_rows
        if files and rows + n > max_rows:
            break
        files.append(path)
        rows += n
    started = time.perf_counter()
    clicks = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    users = pd.read_parquet(data / "user_features.parquet")
    restaurants = pd.read_parquet(data / "restaurant_features.parquet").drop(columns=["latitude", "longitude"])
    merged = clicks.merge(users, on="user_id").merge(restaurants, on="restaurant_id")
    features = [c for c in merged.columns if c.startswith("f")]
    x = merged[features].to_numpy(dtype="float32")
    y = merged["click"].to_numpy()
    seconds = time.perf_counter() - started
    peak = peak_rss_mb()
    return {"baseline_rows": int(len(y)), "baseline_files": len(files), "baseline_features": x.shape[1],
            "baseline_seconds": round(seconds, 3), "baseline_rows_per_s": round(len(y) / seconds),
            "baseline_peak_rss_mb": round(peak, 1),
            "baseline_bytes_per_row": round(peak * 2**20 / len(y), 1)}


def process(data: Path, files_per_partition: int, code: Path | None) -> dict:
    """One run of ``code``'s processing (default: this checkout's): its snapshots, then every
    partition, each in a fresh process, into a new warehouse."""
    code_args = ["--code", str(code)] if code else []
    with tempfile.TemporaryDirectory(prefix="bench-processing-", dir=data.parent) as warehouse:
        result = run_role(__file__, "--data", str(data), "--role", "snapshots", "--warehouse", warehouse, *code_args)
        return result | run_role(__file__, "--data", str(data), "--role", "ours", "--warehouse", warehouse,
                                 "--files-per-partition", str(files_per_partition), *code_args)


def median_run(runs: list[dict]) -> dict:
    return sorted(runs, key=lambda run: run["seconds"])[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--baseline-rows", type=int, default=5_000_000)
    parser.add_argument("--files-per-partition", type=int, default=1)
    parser.add_argument("--compare-with", type=Path, metavar="CHECKOUT",
                        help="also measure this checkout's pipeline package (reported under before)")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each side, alternating which goes first")
    parser.add_argument("--role", choices=("ours", "snapshots", "baseline"), help=argparse.SUPPRESS)
    parser.add_argument("--warehouse", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--code", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    data = args.data.resolve()
    if args.role == "ours":
        print(json.dumps(ours(data, args.warehouse, args.files_per_partition)))
    elif args.role == "snapshots":
        print(json.dumps(snapshots(data, args.warehouse)))
    elif args.role == "baseline":
        print(json.dumps(baseline(data, args.baseline_rows)))
    else:
        sides = {"ours": None} | ({"before": args.compare_with.resolve()} if args.compare_with else {})
        runs: dict[str, list[dict]] = {side: [] for side in sides}
        for round_ in range(args.rounds):
            for side in (list(sides) if round_ % 2 == 0 else list(sides)[::-1]):
                runs[side].append(process(data, args.files_per_partition, sides[side]))
        result = median_run(runs["ours"])
        if args.compare_with:
            result["before"] = median_run(runs["before"])
        if args.rounds > 1 or args.compare_with:
            result["runs"] = {side: [{k: run[k] for k in TIMED} for run in side_runs]
                              for side, side_runs in runs.items()}
        result |= run_role(__file__, "--data", str(data), "--role", "baseline",
                           "--baseline-rows", str(args.baseline_rows))
        result["speedup"] = round(result["rows_per_s"] / result["baseline_rows_per_s"], 1)
        result["machine"] = machine()
        result["command"] = " ".join(["python", "bench/processing.py", *sys.argv[1:]])
        print(json.dumps(result))


if __name__ == "__main__":
    main()
