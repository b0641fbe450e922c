"""BigQuery schemas as Arrow's, and the parquet file record batches are streamed into."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

_ARROW_TYPES = {"INTEGER": pa.int64(), "INT64": pa.int64(), "FLOAT": pa.float64(), "FLOAT64": pa.float64(),
                "BOOLEAN": pa.bool_(), "BOOL": pa.bool_(), "DATE": pa.date32(), "STRING": pa.string(),
                "NUMERIC": pa.decimal128(38, 9), "TIMESTAMP": pa.timestamp("us", "UTC")}


def arrow_schema(table) -> pa.Schema:
    """A BigQuery table's schema as Arrow types (REPEATED → list), for the reference schemas' checks."""
    fields = []
    for f in table.schema:
        kind = _ARROW_TYPES.get(f.field_type, pa.null())
        fields.append(pa.field(f.name, pa.list_(kind) if f.mode == "REPEATED" else kind))
    return pa.schema(fields)


def selected(table, columns: list[str]) -> pa.Schema:
    """The Arrow schema of ``columns`` of a BigQuery table."""
    schema = arrow_schema(table)
    return pa.schema([schema.field(c) for c in columns])


class ParquetSink:
    """Writes record batches to one parquet file as they arrive, in row groups of at most
    ``rows_per_group`` rows (what a page holds): memory stays one page whatever the table's size."""

    def __init__(self, path: Path, rows_per_group: int):
        self.path, self.rows_per_group = path, rows_per_group
        self.rows, self._pending_rows = 0, 0
        self._pending: list[pa.RecordBatch] = []
        self._writer: pq.ParquetWriter | None = None

    def write(self, batch: pa.RecordBatch) -> None:
        writer = self._open(batch.schema)
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        self.rows += batch.num_rows
        if self._pending_rows >= self.rows_per_group:
            self._flush(writer)

    def _open(self, schema: pa.Schema) -> pq.ParquetWriter:
        """The file's writer, opened with ``schema`` on first use."""
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, schema)
        return self._writer

    def _flush(self, writer: pq.ParquetWriter) -> None:
        if self._pending:
            writer.write_table(pa.Table.from_batches(self._pending), row_group_size=self.rows_per_group)
        self._pending, self._pending_rows = [], 0

    def close(self, schema: pa.Schema) -> int:
        writer = self._open(schema)  # no rows: still a readable file with the table's columns
        self._flush(writer)
        writer.close()
        return self.rows


def write(batches: Iterable[pa.RecordBatch], path: Path, rows_per_group: int, schema: pa.Schema) -> int:
    """Stream ``batches`` into ``path`` (``schema`` when there are none); the rows written."""
    sink = ParquetSink(path, rows_per_group)
    for batch in batches:
        sink.write(batch)
    return sink.close(schema)
