"""Numeric materialization metadata (the UI plots ints and floats over time and partitions)."""

from __future__ import annotations


def throughput(rows: int, bytes_written: int, seconds: float) -> dict[str, int | float]:
    """The numbers every materialization reports: rows, bytes, seconds and rows/s."""
    return {
        "dagster/row_count": int(rows),
        "rows": int(rows),
        "bytes": int(bytes_written),
        "seconds": round(float(seconds), 4),
        "rows_per_s": round(rows / seconds, 1) if seconds > 0 else 0.0,
    }
