"""Arrow IPC files (uncompressed, so reads are zero-copy memory maps): the warehouse's format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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


_NUMPY_TYPES = {pa.int32(): np.int32, pa.int64(): np.int64, pa.float32(): np.float32, pa.float64(): np.float64}


def column_values(table: pa.Table, name: str) -> np.ndarray:
    """A numeric column without nulls as a read-only numpy view of the table's memory (for a file
    read by :func:`read_ipc`, of the memory map; several chunks are joined first).

    pyarrow's own ``to_numpy`` imports pandas whenever pandas is installed: ~45 MB resident in an
    API worker that never uses it."""
    column = table.column(name)
    dtype = _NUMPY_TYPES.get(column.type)
    if dtype is None:
        raise TypeError(f"column {name!r}: {column.type} is not one of {sorted(map(str, _NUMPY_TYPES))}")
    array = column.chunk(0) if column.num_chunks == 1 else pa.concat_arrays(column.chunks)
    if array.null_count:
        raise ValueError(f"column {name!r}: {array.null_count} nulls")
    width = np.dtype(dtype).itemsize
    return np.frombuffer(array.buffers()[1], dtype=dtype, count=len(array), offset=array.offset * width)
