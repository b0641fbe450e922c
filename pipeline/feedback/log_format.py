"""The impression log's format: one parquet row per answered ``/recommend`` request.

The API's workers write it (:mod:`pipeline.feedback.log_writer`) as segments under the log
directory (``PIPELINE_IMPRESSION_LOG_DIR``, default ``WAREHOUSE/impression_log``)::

    LOG/date=YYYY-MM-DD/seg-<first served, UTC>-p<pid>-<writer>-<seq>.parquet

A segment holds the records of one worker over one flush interval, all served on its UTC day. It
appears by one rename once complete and checked; a writer killed mid-write leaves only a hidden
``.seg-…tmp-…`` file, which no reader lists and the next writer on the machine removes.

Columns (:data:`SCHEMA`); the shown list is four parallel lists, ``rank`` = position + 1:

=================  ==================  ======================================================
request_id         string              the ``X-Request-Id`` answered (the caller's, or made)
served_at          timestamp[us, UTC]  when the answer was ready
user_id            int64
model_version      string              the published model version that scored it
model_format       string              onnx, torchscript or exported_program
store_version      int64               the online store's live version the features came from
geo_version        string              the geo index version that filtered it
latitude           float64             the request's parameters …
longitude          float64
size               int64
max_dist           float64             metres
sort_dist          bool
candidates         int32 (nullable)    candidate ids sent; null = none sent (all within range)
within             int32               candidates (known, distinct) within max_dist
restaurant_ids     list<int64>         the shown list, best first
scores             list<float32>       the model's click probability of each
displacements      list<float32>       metres from the request's point
propensities       list<float32>       probability each was shown at its slot (1 without exploration)
explored_slot      int32 (nullable)    the rank that showed an explored restaurant; null = none
canary             bool                the user is in the challenger's canary
latency_us         int32               microseconds from the request's arrival to its answer
shadow_version     string (nullable)   the model that scored the request beside the one that
                                       answered (docs/OPERATIONS.md, "Releasing a model"); null = none
shadow_scores      list<float32> (n.)  its probability of each shown restaurant
shadow_overlap     float32 (nullable)  share of the shown list in its own top of the same size
shadow_rank_corr   float32 (nullable)  Spearman correlation of the two models over every candidate
shadow_score_diff  float32 (nullable)  mean absolute difference of the two probabilities
=================  ==================  ======================================================

A segment written before the last seven columns existed reads with them null (``canary`` false).

polars (``pl.read_parquet("LOG/date=*/seg-*.parquet")``), DuckDB and pandas read it as is.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA = pa.schema([
    ("request_id", pa.string()), ("served_at", pa.timestamp("us", tz="UTC")), ("user_id", pa.int64()),
    ("model_version", pa.string()), ("model_format", pa.string()), ("store_version", pa.int64()),
    ("geo_version", pa.string()), ("latitude", pa.float64()), ("longitude", pa.float64()), ("size", pa.int64()),
    ("max_dist", pa.float64()), ("sort_dist", pa.bool_()), ("candidates", pa.int32()), ("within", pa.int32()),
    ("restaurant_ids", pa.list_(pa.int64())), ("scores", pa.list_(pa.float32())),
    ("displacements", pa.list_(pa.float32())), ("propensities", pa.list_(pa.float32())),
    ("explored_slot", pa.int32()),
    ("canary", pa.bool_()), ("latency_us", pa.int32()), ("shadow_version", pa.string()),
    ("shadow_scores", pa.list_(pa.float32())), ("shadow_overlap", pa.float32()),
    ("shadow_rank_corr", pa.float32()), ("shadow_score_diff", pa.float32()),
])
RELEASE_COLUMNS = ("canary", "latency_us", "shadow_version", "shadow_scores", "shadow_overlap", "shadow_rank_corr",
                   "shadow_score_diff")
SEGMENT = re.compile(r"^seg-(\d{8}T\d{12})-p(\d+)-([0-9a-f]+)-(\d+)\.parquet$")
REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
REQUEST_ID_RULE = "1 to 128 characters: letters, digits and . _ : - (not first)"


class Impression(NamedTuple):
    """One answered request, as the route hands it to the log (arrays are not copied)."""

    request_id: str
    served_at_ns: int
    user_id: int
    model_version: str
    model_format: str
    store_version: int
    geo_version: str
    latitude: float
    longitude: float
    size: int
    max_dist: float
    sort_dist: bool
    candidates: int | None
    within: int
    restaurant_ids: np.ndarray
    scores: np.ndarray
    displacements: np.ndarray
    propensities: np.ndarray | None  # None: every item shown with probability 1
    explored_slot: int | None
    canary: bool = False
    latency_us: int = 0
    shadow_version: str | None = None
    shadow_scores: np.ndarray | None = None
    shadow_overlap: float | None = None
    shadow_rank_corr: float | None = None
    shadow_score_diff: float | None = None


def day_of(ns: int) -> str:
    """The UTC day of a time in nanoseconds since the epoch."""
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).date().isoformat()


def day_directory(log_dir: Path, day: str) -> Path:
    return log_dir / f"date={day}"


# The arrays are built from buffers: pyarrow's pa.array() imports pandas wherever it is installed
# (~45 MB in every API worker), whatever it is given.

def _numbers(values, dtype: type[np.generic], arrow_type: pa.DataType) -> pa.Array:
    data = np.ascontiguousarray(np.asarray(values, dtype))
    return pa.Array.from_buffers(arrow_type, len(data), [None, pa.py_buffer(data)])


def _bitmap(flags: np.ndarray) -> pa.Buffer:
    return pa.py_buffer(np.packbits(flags, bitorder="little"))


def _booleans(values) -> pa.Array:
    flags = np.asarray(values, bool)
    return pa.Array.from_buffers(pa.bool_(), len(flags), [None, _bitmap(flags)])


def _optional_int32(values) -> pa.Array:
    valid = np.fromiter((v is not None for v in values), bool, len(values))
    data = np.fromiter((v if v is not None else 0 for v in values), np.int32, len(values))
    return pa.Array.from_buffers(pa.int32(), len(data), [None if valid.all() else _bitmap(valid), pa.py_buffer(data)],
                                 null_count=int((~valid).sum()))


def _optional_float32(values) -> pa.Array:
    valid = np.fromiter((v is not None for v in values), bool, len(values))
    data = np.fromiter((v if v is not None else np.nan for v in values), np.float32, len(values))
    return pa.Array.from_buffers(pa.float32(), len(data), [None if valid.all() else _bitmap(valid),
                                                           pa.py_buffer(data)], null_count=int((~valid).sum()))


def _optional_strings(values) -> pa.Array:
    valid = np.fromiter((v is not None for v in values), bool, len(values))
    strings = _strings([v if v is not None else "" for v in values])
    if valid.all():
        return strings
    return pa.Array.from_buffers(pa.string(), len(values), [_bitmap(valid), *strings.buffers()[1:]],
                                 null_count=int((~valid).sum()))


def _strings(values) -> pa.Array:
    encoded = [v.encode() for v in values]
    offsets = np.zeros(len(encoded) + 1, np.int32)
    np.cumsum(np.fromiter(map(len, encoded), np.int32, len(encoded)), out=offsets[1:])
    return pa.Array.from_buffers(pa.string(), len(encoded),
                                 [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))])


def _lists(arrays, offsets: pa.Array, dtype: type[np.generic], value_type: pa.DataType) -> pa.ListArray:
    values = np.concatenate(arrays).astype(dtype, copy=False) if arrays else np.empty(0, dtype)
    return pa.ListArray.from_arrays(offsets, _numbers(values, dtype, value_type))


def to_table(records: list[Impression] | list[tuple]) -> pa.Table:
    """The records (:class:`Impression` or plain tuples in its field order) as a table of :data:`SCHEMA`."""
    columns = list(zip(*records, strict=True)) if records else [()] * len(Impression._fields)
    by_name = dict(zip(Impression._fields, columns, strict=True))
    lengths = np.fromiter(map(len, by_name["restaurant_ids"]), np.int32, len(records))
    offsets = np.zeros(len(records) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    shared = _numbers(offsets, np.int32, pa.int32())
    propensities = np.ones(int(offsets[-1]), np.float32)
    for start, given in zip(offsets[:-1].tolist(), by_name["propensities"], strict=True):
        if given is not None:
            propensities[start:start + len(given)] = given
    return pa.table({
        "request_id": _strings(by_name["request_id"]),
        "served_at": _numbers(np.asarray(by_name["served_at_ns"], np.int64) // 1000, np.int64,
                              SCHEMA.field("served_at").type),
        "user_id": _numbers(by_name["user_id"], np.int64, pa.int64()),
        "model_version": _strings(by_name["model_version"]),
        "model_format": _strings(by_name["model_format"]),
        "store_version": _numbers(by_name["store_version"], np.int64, pa.int64()),
        "geo_version": _strings(by_name["geo_version"]),
        "latitude": _numbers(by_name["latitude"], np.float64, pa.float64()),
        "longitude": _numbers(by_name["longitude"], np.float64, pa.float64()),
        "size": _numbers(by_name["size"], np.int64, pa.int64()),
        "max_dist": _numbers(by_name["max_dist"], np.float64, pa.float64()),
        "sort_dist": _booleans(by_name["sort_dist"]),
        "candidates": _optional_int32(by_name["candidates"]),
        "within": _numbers(by_name["within"], np.int32, pa.int32()),
        "restaurant_ids": _lists(by_name["restaurant_ids"], shared, np.int64, pa.int64()),
        "scores": _lists(by_name["scores"], shared, np.float32, pa.float32()),
        "displacements": _lists(by_name["displacements"], shared, np.float32, pa.float32()),
        "propensities": pa.ListArray.from_arrays(shared, _numbers(propensities, np.float32, pa.float32())),
        "explored_slot": _optional_int32(by_name["explored_slot"]),
        "canary": _booleans(by_name["canary"]),
        "latency_us": _numbers(by_name["latency_us"], np.int32, pa.int32()),
        "shadow_version": _optional_strings(by_name["shadow_version"]),
        "shadow_scores": _shadow_scores(by_name["shadow_scores"], offsets, shared),
        "shadow_overlap": _optional_float32(by_name["shadow_overlap"]),
        "shadow_rank_corr": _optional_float32(by_name["shadow_rank_corr"]),
        "shadow_score_diff": _optional_float32(by_name["shadow_score_diff"]),
    }, schema=SCHEMA)


def _shadow_scores(given, offsets: np.ndarray, shared: pa.Array) -> pa.Array:
    """The shadow scores as lists beside the shown lists (the same offsets); null where none."""
    values = np.full(int(offsets[-1]), np.nan, np.float32)
    valid = np.zeros(len(given), bool)
    for row, (start, scores) in enumerate(zip(offsets[:-1].tolist(), given, strict=True)):
        if scores is not None:
            values[start:start + len(scores)] = scores
            valid[row] = True
    mask = None if valid.all() else pa.Array.from_buffers(pa.bool_(), len(valid), [None, _bitmap(~valid)])
    return pa.ListArray.from_arrays(shared, _numbers(values, np.float32, pa.float32()), mask=mask)


# dictionary encoding where values repeat (the versions), none elsewhere; no column statistics:
# measured, this halves a segment's write (900 answers: 11 to 5 ms) and its size
DICTIONARY_COLUMNS = ["model_version", "model_format", "geo_version"]


def segment_writer(path: Path) -> pq.ParquetWriter:
    """A parquet writer of the log's schema and encoding (a segment, or a day collected from them)."""
    return pq.ParquetWriter(path, SCHEMA, compression="zstd", write_page_checksum=True,
                            use_dictionary=DICTIONARY_COLUMNS, write_statistics=False)


def write_segment(table: pa.Table, path: Path) -> None:
    with segment_writer(path) as writer:
        writer.write_table(table)


class BadSegment(ValueError):
    """A segment that cannot be read as the log's format; the message names it and why."""


def read_segment(path: Path) -> pa.Table:
    """A published segment, read whole with its page checksums verified; :class:`BadSegment`
    naming it when it is truncated, corrupt or of another schema."""
    try:
        table = pq.read_table(path, page_checksum_verification=True)
    except (pa.ArrowException, OSError) as error:
        raise BadSegment(f"{path.name}: not a readable segment (truncated or corrupt): "
                         f"{str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
    missing = [f.name for f in SCHEMA if table.schema.get_field_index(f.name) < 0]
    if missing and set(missing) <= set(RELEASE_COLUMNS):  # written before the release columns: null
        table = _with_release_columns(table)
    if not table.schema.equals(SCHEMA):
        missing = [f.name for f in SCHEMA if table.schema.get_field_index(f.name) < 0]
        raise BadSegment(f"{path.name}: not the impression log's schema"
                         + (f" (missing {', '.join(missing)})" if missing else " (a column's type differs)"))
    return table


def _with_release_columns(table: pa.Table) -> pa.Table:
    """A table of the log's earlier schema with the release columns added (null; canary false)."""
    rows = table.num_rows
    for name in RELEASE_COLUMNS:
        if table.schema.get_field_index(name) < 0:
            kind = SCHEMA.field(name).type
            column = (pa.Array.from_buffers(pa.bool_(), rows, [None, _bitmap(np.zeros(rows, bool))])
                      if name == "canary" else pa.nulls(rows, kind))
            table = table.append_column(SCHEMA.field(name), column)
    return table.select(SCHEMA.names)


def segments(log_dir: Path, day: str) -> list[Path]:
    """The published segments of ``day``, in name order (first served, then writer)."""
    directory = day_directory(log_dir, day)
    return sorted(p for p in directory.glob("seg-*.parquet") if SEGMENT.match(p.name)) if directory.is_dir() else []


def logged_days(log_dir: Path) -> list[str]:
    """Days with a directory in the log, in order."""
    return sorted(p.name.removeprefix("date=") for p in log_dir.glob("date=*") if p.is_dir()) \
        if log_dir.is_dir() else []
