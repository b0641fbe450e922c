"""The impression log's writer: segments published whole, split by day, a full queue dropping and
counting, a failed write counted, what killed writers left removed."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from pipeline.feedback.log_format import SCHEMA, Impression, logged_days, read_segment, segments
from pipeline.feedback.log_writer import ImpressionLog, remove_dead_writers_temporaries
from pipeline_devtools.api_process import wait_for

NOON = int(dt.datetime(2026, 12, 6, 12, tzinfo=dt.UTC).timestamp() * 1e9)


def impression(n: int, at_ns: int = NOON, shown: int = 3) -> Impression:
    ids = np.arange(n, n + shown, dtype=np.int64)
    return Impression(f"r-{n}", at_ns, n, "m1", "onnx", 4, "g1", 13.7, 100.5, 20, 5000.0, False,
                      None if n % 2 else 1000, shown, ids, np.linspace(0.9, 0.5, shown, dtype=np.float32),
                      np.full(shown, 120.5, np.float32), None, None)


def test_records_come_back_as_written_one_segment_per_flush(tmp_path):
    log = ImpressionLog(tmp_path, flush_s=60)
    for n in range(5):
        assert log.add(impression(n))
    assert log.flush() == 5 and log.flush() == 0
    log.add(impression(5))
    log.close()
    files = segments(tmp_path, "2026-12-06")
    assert len(files) == 2 and log.logged == 6 and log.segments == 2
    table = pl.read_parquet(tmp_path / "date=2026-12-06" / "seg-*.parquet")
    assert table["request_id"].to_list() == [f"r-{n}" for n in range(6)]
    assert table["candidates"].to_list() == [1000, None, 1000, None, 1000, None]
    first = table.row(0, named=True)
    assert first["restaurant_ids"] == [0, 1, 2] and first["propensities"] == [1.0, 1.0, 1.0]
    assert first["served_at"] == dt.datetime(2026, 12, 6, 12, tzinfo=dt.UTC)
    assert read_segment(files[0]).schema.equals(SCHEMA)


def test_a_flush_spanning_midnight_writes_one_segment_per_day(tmp_path):
    log = ImpressionLog(tmp_path, flush_s=60)
    day = 86_400 * 10**9
    log.add(impression(1, NOON - day))
    log.add(impression(2, NOON))
    log.flush()
    assert logged_days(tmp_path) == ["2026-12-05", "2026-12-06"]
    assert [len(segments(tmp_path, d)) for d in logged_days(tmp_path)] == [1, 1]


def test_a_full_queue_drops_and_counts_without_waiting(tmp_path):
    log = ImpressionLog(tmp_path, flush_s=60, capacity=3)
    results = [log.add(impression(n)) for n in range(5)]
    assert results == [True, True, True, False, False] and log.dropped == 2
    assert log.flush() == 3


def test_the_writer_thread_flushes_by_count_and_by_time(tmp_path):
    log = ImpressionLog(tmp_path, flush_s=0.2, flush_records=2)
    log.start()
    try:
        log.add(impression(1))
        log.add(impression(2))  # the second wakes the writer at once
        wait_for(lambda: log.logged == 2, 5, "the count-triggered flush")
        log.add(impression(3))  # alone: published within the flush interval
        wait_for(lambda: log.logged == 3, 5, "the timed flush")
    finally:
        log.close()


def test_a_segment_that_cannot_be_written_is_counted_lost_and_the_writer_goes_on(tmp_path):
    log = ImpressionLog(tmp_path, flush_s=60)
    (tmp_path / "date=2026-12-06").write_text("a file where the day's directory goes")
    log.add(impression(1))
    assert log.flush() == 0 and log.lost == 1 and log.failed_segments == 1
    (tmp_path / "date=2026-12-06").unlink()
    log.add(impression(2))
    assert log.flush() == 1 and not list((tmp_path / "date=2026-12-06").glob(".*"))


def test_a_killed_writers_temporary_is_removed_a_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    day = tmp_path / "date=2026-12-06"
    day.mkdir()
    left = day / f".seg-20261206T120000000000-p{dead.stdout.strip()}-ab12cd34-000001.parquet.tmp-0123"
    live = day / f".seg-20261206T120000000000-p{os.getpid()}-ab12cd34-000001.parquet.tmp-4567"
    for path in (left, live):
        path.write_bytes(b"PAR1 half")
    assert remove_dead_writers_temporaries(tmp_path) == 1
    assert not left.exists() and live.exists()
    assert segments(tmp_path, "2026-12-06") == []  # hidden temporaries are never listed


def test_a_segment_is_readable_by_pyarrow_and_names_its_writer(tmp_path):
    log = ImpressionLog(tmp_path, flush_s=60)
    log.add(impression(7))
    log.flush()
    (path,) = segments(tmp_path, "2026-12-06")
    assert f"-p{os.getpid()}-{log.token}-000001" in path.name
    assert pq.ParquetFile(path).metadata.num_rows == 1
