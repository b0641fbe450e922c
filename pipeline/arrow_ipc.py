"""Arrow IPC files (uncompressed, so reads are zero-copy memory maps): the warehouse's format."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from pipeline.disk_space import ensure_room, naming_disk_full


def write_ipc(data: pa.Table | pa.RecordBatch, path: str | Path) -> int:
    """Write ``data`` to ``path`` (callers write into a candidate directory); return the file's size.
    The free-space reserve is checked first, and a full disk raises
    :class:`~pipeline.disk_space.DiskFull` naming ``path``."""
    ensure_room(path, data.nbytes)
    with naming_disk_full(path, data.nbytes), pa.OSFile(str(path), "wb") as sink, \
            pa.ipc.new_file(sink, data.schema) as writer:
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
