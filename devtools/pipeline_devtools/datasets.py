"""The tests' reference datasets: the tiny one's size and first day, and hand-made click files."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.data.generate import PRESETS

START = dt.date(2026, 1, 1)
"""The first day of the tests' datasets: shard N holds the clicks of January N+1, 2026."""

TINY = dataclasses.replace(PRESETS["tiny"], train_files=3, test_files=1, rows_per_file=4_000, requests=50)
"""The tests' tiny dataset: 3 days of 4,000 clicks, one test file, 50 requests."""


def write_clicks(path: Path, columns: dict, schema: pa.Schema | None = None) -> Path:
    """Write a click parquet file from column lists (None entries become nulls)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table(columns, schema=schema) if schema else pa.table(columns)
    if path.exists():
        path.unlink()  # never write through a hard link into the shared dataset
    pq.write_table(table, path)
    return path
