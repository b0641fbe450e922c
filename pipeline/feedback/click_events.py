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
