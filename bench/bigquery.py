"""Extracting one day of clicks from BigQuery, each way the source can read it, against the local
emulator (local-bigquery 0.3.2 from .venv-bigquery; ``make bigquery-emulator``).

Ways: ``storage_read`` (a read session restricted to the day's partition, no query job),
``query+storage`` (the @day query, its result read through the Storage API) and ``query+rest``
(the query, its result paged over REST). Each extract runs in a fresh process
(pipeline_devtools/extract_peak_rss.py) that reports its time and peak RSS growth; the day is shard
``--shard`` of a reference dataset (the full preset: 625k rows). The emulator reports 0 bytes for
queries, so the price column is computed from BigQuery's list prices and the bytes the day's
columns hold (docs/OPERATIONS.md). Prints one JSON line.

    python bench/bigquery.py --data DIR [--shard 0] [--repeat 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from pipeline_devtools.benchmarks import machine
from pipeline_devtools.bigquery_emulator import bigquery_emulator, load_table, with_day

WAYS = {"storage_read": ("storage", "storage_read"), "query+storage": ("storage", "query"),
        "query+rest": ("rest", "query")}
ON_DEMAND_USD_PER_TIB, STORAGE_READ_USD_PER_TIB = 6.25, 1.10  # BigQuery list prices (US multi-region)
MIN_QUERY_BYTES = 10 * 2**20  # on-demand queries bill at least 10 MB per table referenced
PAGE_ROWS = 20_000  # the source's default


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--shard", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    table = pq.read_table(args.data / "train" / f"train_{args.shard:02d}.parquet")
    day = "2026-01-02"
    results = {}
    with bigquery_emulator() as emulator:
        client = emulator.client()
        client.create_dataset("bench")
        clicks = f"{emulator.project}.bench.clicks"
        load_table(client, clicks, with_day(table.slice(0, 1000), dt.date(2026, 1, 1)), "day")
        load_table(client, clicks, with_day(table, dt.date.fromisoformat(day)), "day", append=True)
        for way, (read_api, clicks_read) in WAYS.items():
            runs = []
            for _ in range(args.repeat):
                done = subprocess.run([sys.executable, "-m", "pipeline_devtools.extract_peak_rss", emulator.endpoint,
                                       emulator.storage_endpoint, emulator.project, "bench", read_api, clicks_read,
                                       str(PAGE_ROWS), "2026-01-01", day], capture_output=True, text=True)
                if done.returncode != 0:
                    raise RuntimeError(done.stderr[-3000:])
                runs.append(json.loads(done.stdout.splitlines()[-1]))
            seconds = statistics.median(r["seconds"] for r in runs)
            results[way] = {"seconds_median": round(seconds, 2), "seconds": [round(r["seconds"], 2) for r in runs],
                            "rows_per_s": round(runs[0]["rows"] / seconds), "peak_growth_mb":
                            round(max(r["peak_growth_mb"] for r in runs), 1),
                            "reported_bytes": runs[0]["bigquery_storage_bytes_scanned"]
                            + runs[0]["bigquery_bytes_processed"]}
    rows = table.num_rows
    selected, with_filter = 24 * rows, 32 * rows  # 3 INT64 columns; the query also reads the DATE column
    query_usd = max(with_filter, MIN_QUERY_BYTES) / 2**40 * ON_DEMAND_USD_PER_TIB
    print(json.dumps({"bench": "bigquery_extract", "rows": rows, "ways": results,
                      "price_usd_per_day": {"storage_read": round(selected / 2**40 * STORAGE_READ_USD_PER_TIB, 7),
                                            "query": round(query_usd, 7)},
                      "machine": machine()}))


if __name__ == "__main__":
    main()
