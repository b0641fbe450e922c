"""A worker's impression log: a bounded queue the request path appends to, and one thread that
publishes what is queued as parquet segments (:mod:`pipeline.feedback.log_format`).

The request path only takes an uncontended lock and appends a tuple that references the
answer's arrays: it never waits on the disk. When ``capacity`` records are queued (the disk is
slow, full or gone), further records are dropped and counted, never blocking an answer.

The writer wakes every ``flush_s`` seconds, or as soon as ``flush_records`` are queued, takes the
whole queue and writes one segment per UTC day it spans: written to a hidden temporary name,
fsynced, checked (it opens as parquet of the log's schema holding exactly the records written),
then renamed into place and its directory fsynced (:func:`pipeline.atomic.staged_file`, the
mechanism of every single-file publish). A segment that fails its write or its check is not
published: its records are counted as lost and the writer goes on. ``close()`` (the API's
shutdown, after SIGTERM) publishes everything still queued. A writer killed with SIGKILL loses
what was queued since its last flush (at most ``flush_s`` of answers) and leaves at most a
hidden temporary, removed by the next writer's start.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq

from pipeline.atomic import staged_file
from pipeline.feedback.log_format import SCHEMA, Impression, day_directory, day_of, to_table, write_segment
from pipeline.processes import pid_alive

log = logging.getLogger("pipeline.api")
SERVED_AT = Impression._fields.index("served_at_ns")


class ImpressionLog:
    """One worker's log writer (see the module docstring); counts what it logged, dropped and lost."""

    def __init__(self, directory: Path, flush_s: float = 1.0, flush_records: int = 5000, capacity: int = 50_000):
        if flush_s <= 0 or flush_records < 1 or capacity < 1:
            raise ValueError(f"flush_s > 0, flush_records ≥ 1 and capacity ≥ 1, got {flush_s}, {flush_records}, "
                             f"{capacity}")
        self.directory, self.flush_s, self.flush_records, self.capacity = directory, flush_s, flush_records, capacity
        self.token = secrets.token_hex(4)  # this writer's part of segment names and request ids
        self._queue: list[tuple] = []
        self._lock = threading.Lock()
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None
        self._seq = 0
        self._failure = ""
        self.logged = self.dropped = self.lost = self.segments = self.failed_segments = 0

    @property
    def queued(self) -> int:
        return len(self._queue)

    def add(self, record: Impression) -> bool:
        """Queue one record; False (and counted) when the queue is full."""
        # kept as a plain tuple: the garbage collector stops tracking a tuple of strings, numbers and
        # arrays, where a NamedTuple stays tracked and, queued for a second, ages into the oldest
        # generation, whose collections then come more often and walk the whole heap
        plain = tuple.__new__(tuple, record)
        with self._lock:
            queue = self._queue
            if len(queue) >= self.capacity:
                self.dropped += 1
                return False
            queue.append(plain)
            full = len(queue) == self.flush_records
        if full:
            self._wake.set()
        return True

    def start(self) -> None:
        """Remove what killed writers left here, then start the writer thread."""
        self.directory.mkdir(parents=True, exist_ok=True)
        removed = remove_dead_writers_temporaries(self.directory)
        if removed:
            log.warning("impression log: removed %d unfinished segment(s) of writers that were killed", removed)
        self._thread = threading.Thread(target=self._run, name="impression-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_s)
            self._wake.clear()
            self.flush()

    def flush(self) -> int:
        """Publish everything queued now; returns how many records were published."""
        with self._lock:
            records, self._queue = self._queue, []
        if not records:
            return 0
        by_day: dict[str, list[tuple]] = defaultdict(list)
        for record in records:
            by_day[day_of(record[SERVED_AT])].append(record)
        published = 0
        for day, day_records in by_day.items():
            try:
                self._write(day, day_records)
            except Exception as error:  # noqa: BLE001 - a disk error must not stop the log or the API
                self.lost += len(day_records)
                self.failed_segments += 1
                if str(error) != self._failure:
                    log.error("impression log: a segment of %d records was not published: %s", len(day_records),
                              error)
                    self._failure = str(error)
                continue
            self.logged += len(day_records)
            self.segments += 1
            published += len(day_records)
        return published

    def _write(self, day: str, records: list[tuple]) -> None:
        self._seq += 1
        first = time.strftime("%Y%m%dT%H%M%S", time.gmtime(records[0][SERVED_AT] // 10**9))
        micros = (records[0][SERVED_AT] // 1000) % 10**6
        name = f"seg-{first}{micros:06d}-p{os.getpid()}-{self.token}-{self._seq:06d}.parquet"
        table = to_table(records)
        with staged_file(day_directory(self.directory, day) / name) as tmp:
            write_segment(table, tmp)
            written = pq.ParquetFile(tmp)
            if written.metadata.num_rows != len(records) or not written.schema_arrow.equals(SCHEMA):
                raise ValueError(f"{name}: the written segment holds {written.metadata.num_rows} rows of "
                                 f"{len(records)}, or another schema")

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the writer and publish what is still queued."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.flush()


def remove_dead_writers_temporaries(directory: Path) -> int:
    """Delete the hidden temporaries of segments whose writer process no longer runs."""
    removed = 0
    for temporary in directory.glob("date=*/.seg-*"):
        pid = temporary.name.split("-p", 1)[1].split("-", 1)[0] if "-p" in temporary.name else ""
        if pid.isdigit() and not pid_alive(int(pid)):
            temporary.unlink(missing_ok=True)
            removed += 1
    return removed
