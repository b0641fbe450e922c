"""Raw click files read: opened with their schema checked, streamed in batches, ids resolved to rows.

A raw click file is parquet with (user_id, restaurant_id, click) columns (:data:`pipeline.data.schema.CLICKS`).
A file that cannot be read as one raises :class:`CorruptFile` naming it. :func:`resolve_batch` turns a
batch into rows of the feature snapshots: rows with a null, an unknown user or restaurant, or a click
outside {0, 1} are dropped and counted by reason (first reason in ``DROP_REASONS`` order wins).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.data.id_index import IdIndex
from pipeline.data.schema import CLICKS

DROP_REASONS = ("null", "unknown_user", "unknown_restaurant", "invalid_click")
DEFAULT_BATCH_ROWS = 1 << 17


class CorruptFile(ValueError):
    """A file that cannot be read as what it claims to be (truncated, a bad page, a bad footer)."""


def _parquet(path: Path) -> pq.ParquetFile:
    # Page checksums are verified where the writer stored them (the generator and every parquet
    # file the pipeline writes do); files without them are read as before.
    try:
        return pq.ParquetFile(path, page_checksum_verification=True)
    except (pa.ArrowException, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise CorruptFile(f"{path}: not a readable parquet file (truncated or corrupt): {exc}") from exc


def open_click_file(path: Path) -> pq.ParquetFile:
    """Open a raw click file and check its schema (errors name the file and column)."""
    reader = _parquet(Path(path))
    CLICKS.validate(reader.schema_arrow, str(path))
    return reader


def iter_raw_batches(files: Sequence[Path], batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """(user_id, restaurant_id, click) batches of raw click files; every schema is checked before
    the first batch is yielded; a page that fails to decode or to match its checksum raises
    :class:`CorruptFile` naming the file."""
    check_positive(batch_rows=batch_rows)
    files = [Path(f) for f in files]
    for path in files:
        open_click_file(path).close()
    for path in files:
        # One reader at a time: a finished reader still holds its last row group's buffers.
        with _parquet(path) as reader:
            batches = reader.iter_batches(batch_size=batch_rows, columns=CLICKS.column_names)
            while True:
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                except (pa.ArrowException, OSError) as exc:
                    raise CorruptFile(f"{path}: corrupt data (a page failed to decode or to match its "
                                      f"checksum): {exc}") from exc
                yield batch


def check_positive(**values: int) -> None:
    """ValueError naming the first argument that is not a positive integer."""
    for name, value in values.items():
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _valid_mask(column: pa.Array) -> np.ndarray | None:
    if column.null_count == 0:
        return None
    return column.is_valid().to_numpy(zero_copy_only=False)


def _integers(column: pa.Array) -> np.ndarray:
    if column.null_count:
        column = column.fill_null(0)
    return column.to_numpy(zero_copy_only=False)


def resolve_batch(batch: pa.RecordBatch, users: IdIndex, restaurants: IdIndex,
                  dropped: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kept rows of a raw (user_id, restaurant_id, click) batch as (user_row, restaurant_row,
    click int8); drops are added to ``dropped`` by reason."""
    user_col, restaurant_col, click_col = batch.columns
    user_row = users.rows(_integers(user_col))
    restaurant_row = restaurants.rows(_integers(restaurant_col))
    click = _integers(click_col)
    ok = np.ones(batch.num_rows, bool)
    for column in (user_col, restaurant_col, click_col):
        valid = _valid_mask(column)
        if valid is not None:
            ok &= valid
    dropped["null"] += int(batch.num_rows - ok.sum())
    for reason, good in (("unknown_user", user_row >= 0),
                         ("unknown_restaurant", restaurant_row >= 0),
                         ("invalid_click", (click == 0) | (click == 1))):
        bad = ok & ~good
        count = int(bad.sum())
        if count:
            dropped[reason] += count
            ok &= good
    if ok.all():
        return user_row, restaurant_row, click.astype(np.int8, copy=False)
    return user_row[ok], restaurant_row[ok], click[ok].astype(np.int8)
