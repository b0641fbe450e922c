"""A day of the impression log, collected and published: every segment of the day read and
checked, the unreadable ones rejected by name (the rest of the day is still published), records
deduplicated by request id (the first kept: a caller may resend an id, a segment may be copied
twice), in order of serving.

Published as an artifact (:mod:`pipeline.publish`) at ``WAREHOUSE/impressions/date=D``:
``impressions.parquet`` in the log's schema (:mod:`pipeline.feedback.log_format`). A segment that
arrives late is picked up when the day is published again: the record lists the segments taken.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.audits import AuditResult
from pipeline.feedback.log_format import SCHEMA, BadSegment, read_segment, segments, write_segment
from pipeline.publish import Published, write_audit_publish

FILE = "impressions.parquet"
UNIQUE_CHECK = "request_ids_unique"
ROWS_CHECK = "rows_match_segments"
SEGMENTS_CHECK = "segments_readable"


@dataclass
class DayImpressions:
    table: pa.Table
    segments: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)   # segment name → why
    segment_rows: int = 0
    duplicates: int = 0


def collect(log_dir: Path, day: str) -> DayImpressions:
    """The day's records from every readable segment, deduplicated by request id."""
    tables, taken, rejected, rows = [], [], {}, 0
    for path in segments(log_dir, day):
        try:
            table = read_segment(path)
        except BadSegment as bad:
            rejected[path.name] = str(bad).removeprefix(f"{path.name}: ")
            continue
        tables.append(table)
        taken.append(path.name)
        rows += table.num_rows
    if not tables:
        return DayImpressions(SCHEMA.empty_table(), taken, rejected)
    frame = pl.from_arrow(pa.concat_tables(tables))
    assert isinstance(frame, pl.DataFrame)
    unique = frame.sort("served_at", maintain_order=True).unique("request_id", keep="first", maintain_order=True)
    return DayImpressions(unique.to_arrow().cast(SCHEMA), taken, rejected, rows, rows - len(unique))


def audits(staging: Path, day: DayImpressions) -> list[AuditResult]:
    written = pq.read_table(staging / FILE)
    ids = written.column("request_id")
    distinct = len(ids.unique())
    return [
        AuditResult(UNIQUE_CHECK, distinct == written.num_rows, {"requests": written.num_rows, "distinct": distinct},
                    "" if distinct == written.num_rows else f"{written.num_rows - distinct} request ids repeat"),
        AuditResult(ROWS_CHECK, written.num_rows == day.segment_rows - day.duplicates,
                    {"rows": written.num_rows, "segment_rows": day.segment_rows, "duplicates": day.duplicates},
                    "" if written.num_rows == day.segment_rows - day.duplicates else
                    f"{written.num_rows} rows written, segments hold {day.segment_rows} with {day.duplicates} repeats"),
    ]


def segment_audit(day: DayImpressions) -> AuditResult:
    """Not blocking: a rejected segment is named, the rest of the day is published."""
    return AuditResult(SEGMENTS_CHECK, not day.rejected, {"segments": len(day.segments) + len(day.rejected),
                                                         "rejected": len(day.rejected)},
                       "; ".join(f"{name}: {why}" for name, why in day.rejected.items()))


def publish(log_dir: Path, day: str, target: Path, on_wait=None) -> tuple[DayImpressions, Published]:
    """Collect ``day`` from the log and publish it at ``target`` (an empty day too: no traffic is a fact)."""
    collected = collect(log_dir, day)

    def write(staging: Path) -> DayImpressions:
        write_segment(collected.table, staging / FILE)
        return collected

    published = write_audit_publish(target, write, audits, on_wait=on_wait, record={
        "day": day, "requests": collected.table.num_rows, "segments": collected.segments,
        "rejected_segments": collected.rejected, "duplicates": collected.duplicates})
    return collected, published


def read(published_dir: Path) -> pa.Table:
    return pq.read_table(published_dir / FILE)
