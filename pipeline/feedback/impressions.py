"""A day of the impression log, collected and published: every segment of the day read and
checked, the unreadable ones rejected by name (the rest of the day is still published), records
deduplicated by request id (the first kept: a caller may resend an id, a segment may be copied
twice), streamed a segment at a time.

Published as an artifact (:mod:`pipeline.publish`) at ``WAREHOUSE/impressions/date=D``:
``impressions.parquet`` in the log's schema (:mod:`pipeline.feedback.log_format`). A segment that
arrives late is picked up when the day is published again: the record lists the segments taken.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.audits import AuditResult
from pipeline.feedback.log_format import BadSegment, read_segment, segment_writer, segments
from pipeline.publish import Published, write_audit_publish

FILE = "impressions.parquet"
UNIQUE_CHECK = "request_ids_unique"
ROWS_CHECK = "rows_match_segments"
SEGMENTS_CHECK = "segments_readable"


@dataclass
class DayImpressions:
    requests: int = 0
    shown: int = 0
    models: set[str] = field(default_factory=set)
    segments: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)   # segment name → why
    segment_rows: int = 0
    duplicates: int = 0


def collect(log_dir: Path, day: str, path: Path) -> DayImpressions:
    """Stream the day's readable segments into one parquet file at ``path`` (a segment at a time:
    memory is one segment and the request ids seen), each request id once: the first, in segment
    order (first served, then writer)."""
    seen: set[str] = set()
    collected = DayImpressions()
    with segment_writer(path) as writer:
        for segment in segments(log_dir, day):
            try:
                table = read_segment(segment)
            except BadSegment as bad:
                collected.rejected[segment.name] = str(bad).removeprefix(f"{segment.name}: ")
                continue
            ids = table.column("request_id").to_pylist()
            first = np.zeros(len(ids), bool)
            for row, request_id in enumerate(ids):
                if request_id not in seen:
                    seen.add(request_id)
                    first[row] = True
            kept = table if first.all() else table.filter(first)
            writer.write_table(kept)
            collected.segments.append(segment.name)
            collected.segment_rows += table.num_rows
            collected.duplicates += table.num_rows - kept.num_rows
            collected.requests += kept.num_rows
            collected.shown += int(pc.sum(pc.list_value_length(kept.column("restaurant_ids"))).as_py() or 0)
            collected.models.update(kept.column("model_version").unique().to_pylist())
    return collected


def audits(staging: Path, day: DayImpressions) -> list[AuditResult]:
    ids = pq.read_table(staging / FILE, columns=["request_id"]).column("request_id")
    rows, distinct = len(ids), len(ids.unique())
    return [
        AuditResult(UNIQUE_CHECK, distinct == rows, {"requests": rows, "distinct": distinct},
                    "" if distinct == rows else f"{rows - distinct} request ids repeat"),
        AuditResult(ROWS_CHECK, rows == day.segment_rows - day.duplicates,
                    {"rows": rows, "segment_rows": day.segment_rows, "duplicates": day.duplicates},
                    "" if rows == day.segment_rows - day.duplicates else
                    f"{rows} rows written, segments hold {day.segment_rows} with {day.duplicates} repeats"),
    ]


def segment_audit(day: DayImpressions) -> AuditResult:
    """Not blocking: a rejected segment is named, the rest of the day is published."""
    return AuditResult(SEGMENTS_CHECK, not day.rejected, {"segments": len(day.segments) + len(day.rejected),
                                                         "rejected": len(day.rejected)},
                       "; ".join(f"{name}: {why}" for name, why in day.rejected.items()))


def publish(log_dir: Path, day: str, target: Path, on_wait=None) -> tuple[DayImpressions, Published]:
    """Collect ``day`` from the log and publish it at ``target`` (an empty day too: no traffic is a fact)."""
    published = write_audit_publish(target, lambda staging: collect(log_dir, day, staging / FILE), audits,
                                    on_wait=on_wait, record=lambda collected: {
                                        "day": day, "requests": collected.requests, "shown": collected.shown,
                                        "segments": collected.segments, "rejected_segments": collected.rejected,
                                        "duplicates": collected.duplicates})
    return published.written, published


def read(published_dir: Path) -> pa.Table:
    """The whole day (for small days and tests; :func:`path` to stream it)."""
    return pq.read_table(published_dir / FILE)


def path(published_dir: Path) -> Path:
    return published_dir / FILE
