"""Raw click files → validated, id-resolved, model-ready chunks, streaming with bounded memory.

A processed partition is a directory of fixed-size Arrow IPC chunks (``chunk-NNNNN.arrow``, every
chunk ``chunk_rows`` rows but the last) with columns ``user_row`` int32, ``restaurant_row`` int32
(rows of the feature snapshots) and ``click`` int8, plus ``_manifest.json``. 9 bytes a row; features
are gathered from the in-memory snapshots when a batch is formed (see docs/DATA.md for why).

Rows with a null, an unknown user or restaurant, or a click outside {0, 1} are dropped and counted
by reason (first reason in that order wins), so ``raw_rows == rows + sum(dropped)``. Repeated
(user, restaurant) pairs are kept and counted as ``duplicates``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.arrow_ipc import read_first_batch, write_ipc
from pipeline.data.id_index import IdIndex
from pipeline.data.schema import CLICKS
from pipeline.publish import RECORD, Artifact, AuditResult, Published, verify_file, write_audit_publish

CHUNK_SCHEMA = pa.schema(
    [("user_row", pa.int32()), ("restaurant_row", pa.int32()), ("click", pa.int8())]
)
DROP_REASONS = ("null", "unknown_user", "unknown_restaurant", "invalid_click")
MANIFEST = "_manifest.json"
RECONCILE_CHECK = "raw_rows_reconcile"
CHUNKS_CHECK = "chunks_match_manifest"
FORMAT_VERSION = 1
DEFAULT_CHUNK_ROWS = 1 << 20
DEFAULT_BATCH_ROWS = 1 << 17
DUPLICATE_PASS_BYTES = 128 << 20 # key buffer of one duplicate-counting pass (8 B a row)


@dataclass
class PartitionStats:
    """What processing one partition did; ``raw_rows == rows + sum(dropped.values())``."""

    raw_rows: int = 0
    rows: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    duplicates: int = 0
    chunks: list[dict] = field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0

    @property
    def dropped_rows(self) -> int:
        return sum(self.dropped.values())


class _ChunkWriter:
    """Fills preallocated chunk buffers and writes each full chunk as one Arrow IPC file."""

    def __init__(self, out_dir: Path, chunk_rows: int, stats: PartitionStats):
        self.out_dir, self.chunk_rows, self.stats = out_dir, chunk_rows, stats
        self.user = np.empty(chunk_rows, np.int32)
        self.restaurant = np.empty(chunk_rows, np.int32)
        self.click = np.empty(chunk_rows, np.int8)
        self.filled = 0

    def append(self, user: np.ndarray, restaurant: np.ndarray, click: np.ndarray) -> None:
        start, n = 0, len(user)
        while start < n:
            take = min(n - start, self.chunk_rows - self.filled)
            end = self.filled + take
            self.user[self.filled:end] = user[start:start + take]
            self.restaurant[self.filled:end] = restaurant[start:start + take]
            self.click[self.filled:end] = click[start:start + take]
            self.filled, start = end, start + take
            if self.filled == self.chunk_rows:
                self.flush()

    def flush(self) -> None:
        if not self.filled:
            return
        n = self.filled
        name = f"chunk-{len(self.stats.chunks):05d}.arrow"
        batch = pa.record_batch(
            [pa.array(self.user[:n]), pa.array(self.restaurant[:n]), pa.array(self.click[:n])],
            schema=CHUNK_SCHEMA)
        size = write_ipc(batch, self.out_dir / name)
        self.stats.chunks.append({"file": name, "rows": n, "bytes": size})
        self.stats.rows += n
        self.stats.bytes += size
        self.filled = 0


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
    _positive(batch_rows=batch_rows)
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


def _positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def process_clicks(files: Sequence[Path], users: IdIndex, restaurants: IdIndex, out_dir: Path,
                   chunk_rows: int = DEFAULT_CHUNK_ROWS,
                   batch_rows: int = DEFAULT_BATCH_ROWS) -> PartitionStats:
    """Stream ``files`` into chunk files in ``out_dir``; return the partition's statistics.

    Memory is bounded by ``chunk_rows`` + ``batch_rows`` (plus the id indexes), whatever the size
    of the input. All schemas are checked before anything is written.
    """
    _positive(chunk_rows=chunk_rows, batch_rows=batch_rows)
    started = time.perf_counter()
    stats = PartitionStats()
    writer = _ChunkWriter(out_dir, chunk_rows, stats)
    for batch in iter_raw_batches(files, batch_rows):
        stats.raw_rows += batch.num_rows
        writer.append(*resolve_batch(batch, users, restaurants, stats.dropped))
    writer.flush()
    stats.duplicates = count_duplicates(out_dir, stats.chunks, restaurants.size)
    stats.seconds = time.perf_counter() - started
    return stats


def _chunk_keys(out_dir: Path, chunk: dict, n_restaurants: int) -> np.ndarray:
    batch = read_first_batch(out_dir / chunk["file"])
    key = batch.column(0).to_numpy().astype(np.int64)
    key *= n_restaurants
    key += batch.column(1).to_numpy()
    return key


def _pass_of(key: np.ndarray, passes: int) -> np.ndarray:
    return ((key * 0x9E3779B1) >> 7) % passes  # spreads the structured keys evenly


def count_duplicates(out_dir: Path, chunks: list[dict], n_restaurants: int,
                     pass_bytes: int = DUPLICATE_PASS_BYTES) -> int:
    """Rows that repeat an earlier (user, restaurant) pair, exactly, in bounded memory.

    Keys are hash-split into as many passes as keep one pass's sorted key buffer within
    ``pass_bytes``; a first sweep sizes each pass's buffer exactly.
    """
    rows = sum(c["rows"] for c in chunks)
    if rows == 0:
        return 0
    passes = max(1, -(-rows * 8 // pass_bytes))
    sizes = np.zeros(passes, np.int64)
    if passes == 1:
        sizes[0] = rows
    else:
        for chunk in chunks:
            sizes += np.bincount(_pass_of(_chunk_keys(out_dir, chunk, n_restaurants), passes),
                                 minlength=passes)
    distinct = 0
    for part in range(passes):
        keys, filled = np.empty(sizes[part], np.int64), 0
        for chunk in chunks:
            key = _chunk_keys(out_dir, chunk, n_restaurants)
            if passes > 1:
                key = key[_pass_of(key, passes) == part]
            keys[filled:filled + len(key)] = key
            filled += len(key)
        keys.sort()
        distinct += int(len(keys) > 0) + int(np.count_nonzero(keys[1:] != keys[:-1]))
    return rows - distinct


def partition_audits(out_dir: Path, stats: PartitionStats, raw_rows: int) -> list[AuditResult]:
    """What a processed partition must satisfy to be published: raw rows = kept + dropped, and
    every chunk as written holds the rows its manifest says."""
    reconciled = raw_rows == stats.rows + stats.dropped_rows
    written = [read_first_batch(out_dir / c["file"]).num_rows for c in stats.chunks]
    wrong = [c["file"] for c, n in zip(stats.chunks, written, strict=True) if n != c["rows"]]
    return [
        AuditResult(RECONCILE_CHECK, reconciled,
                    {"raw_rows": raw_rows, "kept_rows": stats.rows, "dropped_rows": stats.dropped_rows},
                    "" if reconciled else f"raw rows {raw_rows} != kept {stats.rows} + dropped {stats.dropped_rows}"),
        AuditResult(CHUNKS_CHECK, not wrong, {"chunks": len(written), "rows_in_chunks": sum(written)},
                    f"chunks {wrong} do not hold the rows the manifest says" if wrong else ""),
    ]


def publish_partition(files: Sequence[Path], users: IdIndex, restaurants: IdIndex, target: Path,
                      chunk_rows: int = DEFAULT_CHUNK_ROWS, batch_rows: int = DEFAULT_BATCH_ROWS,
                      on_wait=None, **context) -> tuple[PartitionStats, Published]:
    """Process ``files`` into a candidate of the partition ``target``, audit it (see
    :func:`partition_audits`) and publish it with its manifest (``context``: day, sources,
    snapshot versions …). :class:`~pipeline.publish.Rejected` if an audit fails."""
    _positive(chunk_rows=chunk_rows, batch_rows=batch_rows)
    raw_rows = 0
    for path in files:
        with open_click_file(path) as reader:
            raw_rows += reader.metadata.num_rows

    def write(staging: Path) -> PartitionStats:
        stats = process_clicks(files, users, restaurants, staging, chunk_rows, batch_rows)
        write_manifest(staging, stats, chunk_rows=chunk_rows, **context)
        return stats

    published = write_audit_publish(target, write, lambda staging, stats: partition_audits(staging, stats, raw_rows),
                                    record=lambda stats: {"day": context.get("day"), "rows": stats.rows},
                                    on_wait=on_wait)
    return published.written, published
def write_manifest(out_dir: Path, stats: PartitionStats, **context) -> dict:
    """Write ``_manifest.json`` (statistics plus ``context``: day, sources, snapshot versions)."""
    manifest = {"format_version": FORMAT_VERSION, **context, **asdict(stats),
                "dropped_rows": stats.dropped_rows}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def live_partition(partition: Path) -> Path:
    """The live version directory of a published processed partition (read every file from it)."""
    try:
        return Artifact(partition).live()
    except FileNotFoundError:
        raise FileNotFoundError(f"no processed partition at {partition} (materialize processed_clicks)") from None


def _version_dir(partition: Path) -> Path:
    """A version directory as given, or the live version of a published partition (resolved once)."""
    partition = Path(partition)
    if partition.is_symlink() or not partition.exists():
        return live_partition(partition)
    if not (partition / RECORD).exists():
        raise FileNotFoundError(f"{partition} was written before versioned publishing (no {RECORD}): "
                                f"re-materialize processed_clicks for that day")
    return partition


def read_manifest(partition: Path) -> dict:
    """The manifest of the live version of ``partition`` (or of a version directory)."""
    return json.loads((_version_dir(partition) / MANIFEST).read_text())


def iter_chunks(partition: Path, verify: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (user_row, restaurant_row, click) numpy arrays chunk by chunk (memory-mapped) from
    one version of ``partition``; each chunk is checked against its published crc32 first."""
    directory = _version_dir(partition)
    record = json.loads((directory / RECORD).read_text())
    for chunk in json.loads((directory / MANIFEST).read_text())["chunks"]:
        yield _read_chunk(directory, chunk["file"], record, verify)


def read_chunk(partition: Path, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chunk ``index`` of one version of ``partition``, as :func:`iter_chunks` yields it."""
    directory = _version_dir(partition)
    chunks = json.loads((directory / MANIFEST).read_text())["chunks"]
    if not 0 <= index < len(chunks):
        raise IndexError(f"{directory} has {len(chunks)} chunks, not a chunk {index}")
    return _read_chunk(directory, chunks[index]["file"], json.loads((directory / RECORD).read_text()), True)


def _read_chunk(directory: Path, file: str, record: dict, verify: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    batch = read_first_batch(verify_file(directory, file, record) if verify else directory / file)
    return tuple(batch.column(i).to_numpy() for i in range(3))
