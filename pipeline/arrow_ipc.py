"""Arrow IPC files (uncompressed, so reads are zero-copy memory maps): the warehouse's format."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa


def write_ipc(data: pa.Table | pa.RecordBatch, path: str | Path) -> int:
    """Write ``data`` to ``path`` (callers write into a candidate directory); return the file's size."""
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, data.schema) as writer:
        if isinstance(data, pa.RecordBatch):
            writer.write_batch(data)
        else:
            writer.write_table(data)
    return Path(path).stat().st_size


def read_ipc(path: str | Path) -> pa.Table:
    """The whole file, memory-mapped (schema metadata included)."""
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


def read_first_batch(path: str | Path) -> pa.RecordBatch:
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).get_batch(0)
