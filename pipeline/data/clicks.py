"""Raw click files → validated, id-resolved, model-ready chunks, streaming with bounded memory, published.

A processed partition is a directory of fixed-size Arrow IPC chunks (``chunk-NNNNN.arrow``, every
chunk ``chunk_rows`` rows but the last) with columns ``user_row`` int32, ``restaurant_row`` int32
(rows of the feature snapshots) and ``click`` int8, plus ``_manifest.json``. 9 bytes a row; features
are gathered from the in-memory snapshots when a batch is formed (see docs/DATA.md for why).

Rows with a null, an unknown user or restaurant, or a click outside {0, 1} are dropped and counted
by reason (:func:`pipeline.data.raw_clicks.resolve_batch`), so ``raw_rows == rows + sum(dropped)``.
Repeated (user, restaurant) pairs are kept and counted as ``duplicates``. Reading a published
partition back: :mod:`pipeline.data.processed_partition`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.arrow_ipc import read_first_batch, write_ipc
from pipeline.audits import AuditResult
from pipeline.data.id_index import IdIndex
from pipeline.data.raw_clicks import (
    DEFAULT_BATCH_ROWS,
    DROP_REASONS,
    check_positive,
    iter_raw_batches,
    open_click_file,
    resolve_batch,
)
from pipeline.publish import Published, write_audit_publish

CHUNK_SCHEMA = pa.schema(
    [("user_row", pa.int32()), ("restaurant_row", pa.int32()), ("click", pa.int8())]
)
MANIFEST = "_manifest.json"
RECONCILE_CHECK = "raw_rows_reconcile"
CHUNKS_CHECK = "chunks_match_manifest"
FORMAT_VERSION = 1
DEFAULT_CHUNK_ROWS = 1 << 20
DUPLICATE_PASS_BYTES = 128 << 20  # key buffer of one duplicate-counting pass (8 B a row)


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


def process_clicks(files: Sequence[Path], users: IdIndex, restaurants: IdIndex, out_dir: Path,
                   chunk_rows: int = DEFAULT_CHUNK_ROWS,
                   batch_rows: int = DEFAULT_BATCH_ROWS) -> PartitionStats:
    """Stream ``files`` into chunk files in ``out_dir``; return the partition's statistics.

    Memory is bounded by ``chunk_rows`` + ``batch_rows`` (plus the id indexes), whatever the size
    of the input. All schemas are checked before anything is written.
    """
    check_positive(chunk_rows=chunk_rows, batch_rows=batch_rows)
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
    snapshot versions …). :class:`~pipeline.audits.Rejected` if an audit fails."""
    check_positive(chunk_rows=chunk_rows, batch_rows=batch_rows)
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


