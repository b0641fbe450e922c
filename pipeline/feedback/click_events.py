"""Click events: what users clicked, by request id and restaurant id.

A click source (the local directory ``PIPELINE_CLICK_EVENTS_DIR``, which ``pipeline simulate``
writes, or a BigQuery table) holds parquet files by UTC day of the click::

    DIR/date=YYYY-MM-DD/*.parquet

=============  ==================  ===============================================================
request_id     string              the ``X-Request-Id`` of the answer that showed the restaurant
restaurant_id  int64
clicked_at     timestamp[us, UTC]
clicked        bool                true for a click; a source may also record explicit non-clicks
=============  ==================  ===============================================================

A pair (request_id, restaurant_id) with any event ``clicked = true`` is a click, counted once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.atomic import staged_file
from pipeline.audits import AuditResult
from pipeline.publish import Published, write_audit_publish

SCHEMA = pa.schema([("request_id", pa.string()), ("restaurant_id", pa.int64()),
                    ("clicked_at", pa.timestamp("us", tz="UTC")), ("clicked", pa.bool_())])


class BadClickFile(ValueError):
    """A click event file that is not readable as the format above; names the file and why."""


def table(request_ids: list[str], restaurant_ids: list[int], clicked_at_us: list[int],
          clicked: list[bool] | None = None) -> pa.Table:
    return pa.table({"request_id": pa.array(request_ids, pa.string()),
                     "restaurant_id": pa.array(restaurant_ids, pa.int64()),
                     "clicked_at": pa.array(np.asarray(clicked_at_us, np.int64), pa.int64()).cast(
                         SCHEMA.field("clicked_at").type),
                     "clicked": pa.array(clicked if clicked is not None else [True] * len(request_ids), pa.bool_())},
                    schema=SCHEMA)


def write(path: Path, events: pa.Table) -> None:
    """One click event file, written whole and renamed into place."""
    with staged_file(path) as tmp:
        pq.write_table(events, tmp, compression="zstd", write_page_checksum=True)


def read(path: Path) -> pa.Table:
    """A click event file with its schema checked (columns by name; extra columns ignored)."""
    try:
        found = pq.read_table(path, page_checksum_verification=True)
    except (pa.ArrowException, OSError) as error:
        raise BadClickFile(f"{path}: not a readable parquet file (truncated or corrupt): "
                           f"{str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
    for field in SCHEMA:
        index = found.schema.get_field_index(field.name)
        if index < 0:
            raise BadClickFile(f"{path}: column {field.name} missing (expected {SCHEMA.names})")
        if not found.schema.field(index).type.equals(field.type):
            try:
                found = found.set_column(index, field.name, found.column(index).cast(field.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise BadClickFile(f"{path}: column {field.name} is {found.schema.field(index).type}, expected "
                                   f"{field.type}") from None
    return found.select(SCHEMA.names)


def day_files(directory: Path, day: str) -> list[Path]:
    """The click event files of ``day`` (hidden temporaries are not listed)."""
    folder = directory / f"date={day}"
    return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith(".")) if folder.is_dir() else []


EVENTS = "events.parquet"
ROWS_CHECK = "rows_match_files"
FILES_CHECK = "click_files_readable"


def publish_day(files: list[Path], day: str, target: Path, on_wait=None) -> tuple[dict[str, str], Published]:
    """The day's click event files as one published table at ``target``; a file that cannot be
    read is rejected by name (returned: name → why) and the rest published."""
    tables, rejected = [], {}
    for path in files:
        try:
            tables.append(read(path))
        except BadClickFile as bad:
            rejected[path.name] = str(bad).removeprefix(f"{path}: ")
    events = pa.concat_tables(tables) if tables else SCHEMA.empty_table()

    def write(staging: Path) -> pa.Table:
        pq.write_table(events, staging / EVENTS, compression="zstd", write_page_checksum=True)
        return events

    def audit(staging: Path, written: pa.Table) -> list[AuditResult]:
        rows = pq.read_metadata(staging / EVENTS).num_rows
        return [AuditResult(ROWS_CHECK, rows == written.num_rows, {"rows": rows, "files": len(tables)},
                            "" if rows == written.num_rows else f"{rows} rows written of {written.num_rows}")]

    published = write_audit_publish(target, write, audit, on_wait=on_wait, record={
        "day": day, "events": events.num_rows, "source_files": [p.name for p in files if p.name not in rejected],
        "rejected_files": rejected})
    return rejected, published


def files_audit(rejected: dict[str, str], files: int) -> AuditResult:
    """Not blocking: a rejected file is named, the rest of the day is published."""
    return AuditResult(FILES_CHECK, not rejected, {"files": files, "rejected": len(rejected)},
                       "; ".join(f"{name}: {why}" for name, why in rejected.items()))


def published_file(published_dir: Path) -> Path:
    return published_dir / EVENTS
