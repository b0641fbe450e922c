"""Raw data from Google BigQuery, streamed into the same raw files the local source offers.

Tables (names configurable): ``clicks`` (user_id, restaurant_id, click INT64, partitioned by DAY on
a DATE column, ``day`` by default), ``user_features``, ``restaurant_features``, ``test_clicks``
(the held-out rows) and ``requests``.

How rows are read, chosen by measured speed and price (docs/OPERATIONS.md, docs/PERFORMANCE.md):

- a day of clicks: with the Storage Read API, a read session on the table restricted to the day's
  partition (no query job; billed as storage bytes read); without it, a query with the day as a
  ``@day`` parameter (dry run first, then ``maximum_bytes_billed``), its result paged over REST.
  ``clicks_read="query"`` forces the query, read through the Storage API when available;
- a whole table (features, held-out rows, requests): a read session, or ``tabledata.list`` pages
  (free) without the Storage API.

Every read streams: pages are written to parquet as they arrive (row groups of at most
``page_rows`` rows), so memory does not grow with the table. The client never builds a Storage
client of its own (it would aim at the public endpoint); every call has a timeout, transient
errors are retried by the client (never a 4xx), and are raised as :class:`TransientSourceError`
when retries run out. Identifiers are validated; values enter SQL only as query parameters.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import hashlib
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.data.features import FeatureKind
from pipeline.data.layout import parse_day
from pipeline.data.schema import CLICKS, REQUESTS, TableSpec
from pipeline.data.sources import Extract, SourceConfigError, TransientSourceError

READ_APIS = ("auto", "storage", "rest")
CLICKS_READS = ("auto", "storage_read", "query")
_PROJECT = re.compile(r"^(?:[a-z0-9.-]+:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$")  # optionally domain-scoped
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,1024}$")  # stricter than BigQuery: no spaces or unicode
_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,299}$")
_ARROW_TYPES = {"INTEGER": pa.int64(), "INT64": pa.int64(), "FLOAT": pa.float64(), "FLOAT64": pa.float64(),
                "BOOLEAN": pa.bool_(), "BOOL": pa.bool_(), "DATE": pa.date32(), "STRING": pa.string(),
                "NUMERIC": pa.decimal128(38, 9), "TIMESTAMP": pa.timestamp("us", "UTC")}


@dataclass(frozen=True)
class BigQuerySettings:
    """Where the tables are and how to read them. ``endpoint`` (and ``storage_endpoint``, host:port
    of its gRPC Storage Read API) point at an emulator, with anonymous credentials."""

    project: str
    dataset: str
    location: str = ""
    clicks_table: str = "clicks"
    day_column: str = "day"
    users_table: str = "user_features"
    restaurants_table: str = "restaurant_features"
    test_table: str = "test_clicks"
    requests_table: str = "requests"
    credentials_file: str = ""
    endpoint: str = ""
    storage_endpoint: str = ""
    read_api: str = "auto"
    clicks_read: str = "auto"
    maximum_bytes_billed: int = 1 << 30
    timeout_s: float = 60.0
    stream_timeout_s: float = 3600.0
    page_rows: int = 20_000  # a REST page costs ~3.5 KB a row while decoded: ~70 MB

    def __post_init__(self):
        if not self.project:
            raise SourceConfigError("the BigQuery source needs a project: set PIPELINE_BIGQUERY_PROJECT "
                                    "(or the source resource's project)")
        if not self.dataset:
            raise SourceConfigError("the BigQuery source needs a dataset: set PIPELINE_BIGQUERY_DATASET "
                                    "(or the source resource's dataset)")
        if not _PROJECT.match(self.project):
            raise SourceConfigError(f"PIPELINE_BIGQUERY_PROJECT={self.project!r} is not a BigQuery project id")
        for setting, value in (("dataset", self.dataset), ("clicks_table", self.clicks_table),
                               ("users_table", self.users_table), ("restaurants_table", self.restaurants_table),
                               ("test_table", self.test_table), ("requests_table", self.requests_table)):
            if not _NAME.match(value):
                raise SourceConfigError(f"BigQuery {setting}={value!r}: use letters, digits, '_' and '-' only")
        if not _COLUMN.match(self.day_column):
            raise SourceConfigError(f"BigQuery day_column={self.day_column!r} is not a column name")
        if self.read_api not in READ_APIS:
            raise SourceConfigError(f"BigQuery read_api={self.read_api!r}: one of {', '.join(READ_APIS)}")
        if self.clicks_read not in CLICKS_READS:
            raise SourceConfigError(f"BigQuery clicks_read={self.clicks_read!r}: one of {', '.join(CLICKS_READS)}")
        if self.maximum_bytes_billed < 0 or self.page_rows <= 0 or self.timeout_s <= 0:
            raise SourceConfigError("BigQuery maximum_bytes_billed must be >= 0 (0: no cap), page_rows and "
                                    "timeout_s > 0")

    def table_id(self, table: str) -> str:
        return f"{self.project}.{self.dataset}.{table}"


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """BigQuery's errors as the pipeline's: a missing dataset or table → FileNotFoundError naming
    it; other 4xx → ValueError (never retried); 5xx, throttling and broken connections →
    :class:`TransientSourceError` (retried by the step's RetryPolicy)."""
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc
    from requests import exceptions as http_exc

    try:
        yield
    except gexc.NotFound as exc:
        raise FileNotFoundError(f"{what} not found: {_message(exc)}") from exc
    except (gexc.TooManyRequests, gexc.ServerError, gexc.DeadlineExceeded, gexc.RetryError,
            http_exc.ConnectionError, http_exc.Timeout, ConnectionError, TimeoutError) as exc:
        raise TransientSourceError(f"{what}: {type(exc).__name__}: {_message(exc)}") from exc
    except gexc.ClientError as exc:
        raise ValueError(f"{what}: {_message(exc)}") from exc
    except auth_exc.DefaultCredentialsError as exc:
        raise SourceConfigError(_NO_CREDENTIALS) from exc


_NO_CREDENTIALS = ("no Google credentials for the BigQuery source: set GOOGLE_APPLICATION_CREDENTIALS to a "
                   "service-account key file (or the source resource's credentials_file), or run "
                   "`gcloud auth application-default login`; for an emulator set PIPELINE_BIGQUERY_ENDPOINT")


def _message(exc: Exception) -> str:
    """BigQuery's own words (its first error), without the request's URL."""
    errors = getattr(exc, "errors", None) or []
    first = errors[0] if errors and isinstance(errors[0], dict) else {}
    return first.get("message") or getattr(exc, "message", None) or str(exc).splitlines()[0]


def arrow_schema(table) -> pa.Schema:
    """A BigQuery table's schema as Arrow types (REPEATED → list), for the reference schemas' checks."""
    fields = []
    for f in table.schema:
        kind = _ARROW_TYPES.get(f.field_type, pa.null())
        fields.append(pa.field(f.name, pa.list_(kind) if f.mode == "REPEATED" else kind))
    return pa.schema(fields)


class _ParquetSink:
    """Writes record batches to one parquet file as they arrive, in row groups of at most
    ``rows_per_group`` rows (what a page holds): memory stays one page whatever the table's size."""

    def __init__(self, path: Path, rows_per_group: int):
        self.path, self.rows_per_group = path, rows_per_group
        self.rows, self._pending, self._pending_rows, self._writer = 0, [], 0, None

    def write(self, batch: pa.RecordBatch) -> None:
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, batch.schema)
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        self.rows += batch.num_rows
        if self._pending_rows >= self.rows_per_group:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(pa.Table.from_batches(self._pending), row_group_size=self.rows_per_group)
        self._pending, self._pending_rows = [], 0

    def close(self, schema: pa.Schema) -> int:
        if self._writer is None:  # no rows: still a readable file with the table's columns
            self._writer = pq.ParquetWriter(self.path, schema)
        self._flush()
        self._writer.close()
        return self.rows


@dataclass
class ReadStats:
    """What one read cost: how it read, and the bytes BigQuery reported (0 on the emulator)."""

    method: str
    read_api: str
    bytes_processed: int = 0   # query: total_bytes_processed
    bytes_billed: int = 0      # query: total_bytes_billed
    dry_run_bytes: int = 0     # query: the dry run's estimate
    storage_bytes: int = 0     # read session: estimated_total_bytes_scanned
    pages: int = 0

    def notes(self) -> list[str]:
        if self.method == "query" and self.bytes_processed == 0:
            return ["the endpoint reported 0 bytes processed and billed: unknown, not free (the local emulator "
                    "always reports 0)"]
        return []

    def metadata(self) -> dict:
        return {"bigquery_method": self.method, "bigquery_read_api": self.read_api,
                "bigquery_bytes_processed": self.bytes_processed, "bigquery_bytes_billed": self.bytes_billed,
                "bigquery_dry_run_bytes": self.dry_run_bytes, "bigquery_storage_bytes_scanned": self.storage_bytes,
                "bigquery_pages": self.pages,
                **({"bigquery_cost_note": " ".join(notes)} if (notes := self.notes()) else {})}


class CostCapExceeded(ValueError):
    """A read would cost more than ``maximum_bytes_billed``; nothing was read."""


@dataclass
class BigQuerySource:
    """The pipeline's :class:`~pipeline.data.sources.Source` over BigQuery tables."""

    settings: BigQuerySettings
    _clients: dict = field(default_factory=dict, repr=False)

    # ----- clients

    def _credentials(self):
        from google.auth.credentials import AnonymousCredentials
        from google.oauth2 import service_account

        if self.settings.endpoint:
            return AnonymousCredentials()
        if self.settings.credentials_file:
            path = Path(self.settings.credentials_file)
            if not path.is_file():
                raise SourceConfigError(f"GOOGLE_APPLICATION_CREDENTIALS={path}: no such key file")
            return service_account.Credentials.from_service_account_file(
                str(path), scopes=["https://www.googleapis.com/auth/cloud-platform"])
        import google.auth

        with _translated("BigQuery credentials"):
            credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
        return credentials

    def client(self):
        if "bq" not in self._clients:
            from google.cloud import bigquery

            options = {"api_endpoint": self.settings.endpoint} if self.settings.endpoint else None
            self._clients["bq"] = bigquery.Client(project=self.settings.project, credentials=self._credentials(),
                                                  location=self.settings.location or None, client_options=options)
        return self._clients["bq"]

    def storage(self):
        """The Storage Read client, or None when reads go over REST (not installed, or read_api=rest)."""
        if "storage" not in self._clients:
            self._clients["storage"] = None if self.settings.read_api == "rest" else self._storage_client()
        return self._clients["storage"]

    def _storage_client(self):
        _large_buffers_returned_at_once()
        try:
            from google.cloud.bigquery_storage_v1 import BigQueryReadClient
            from google.cloud.bigquery_storage_v1.services.big_query_read.transports import BigQueryReadGrpcTransport
        except ImportError:
            if self.settings.read_api == "storage":
                raise SourceConfigError("read_api=storage needs google-cloud-bigquery-storage "
                                        "(pip install 'restaurant-pipeline[bigquery]')") from None
            return None
        if self.settings.storage_endpoint:
            import grpc

            # As Google's own transport: no cap on a message (the server sizes them; one is in memory at a time).
            channel = grpc.insecure_channel(self.settings.storage_endpoint,
                                            options=[("grpc.max_send_message_length", -1),
                                                     ("grpc.max_receive_message_length", -1)])
            return BigQueryReadClient(transport=BigQueryReadGrpcTransport(channel=channel))
        if self.settings.endpoint:
            raise SourceConfigError("PIPELINE_BIGQUERY_ENDPOINT is set but PIPELINE_BIGQUERY_STORAGE_ENDPOINT is "
                                    "not: set it (host:port of the emulator's gRPC port), or read_api=rest")
        return BigQueryReadClient(credentials=self._credentials())

    def _retry(self):
        from google.cloud.bigquery import DEFAULT_RETRY

        return DEFAULT_RETRY.with_timeout(self.settings.timeout_s * 3)

    # ----- the Source protocol

    def describe(self) -> str:
        where = self.settings.endpoint or "bigquery.googleapis.com"
        return f"BigQuery {self.settings.project}.{self.settings.dataset} at {where}"

    def table(self, name: str):
        """The table's metadata (free: no bytes read). Not found: says whether the dataset or the table is missing."""
        table_id = self.settings.table_id(name)
        try:
            with _translated(f"BigQuery table {table_id}"):
                return self.client().get_table(table_id, retry=self._retry(), timeout=self.settings.timeout_s)
        except FileNotFoundError as missing:
            dataset = f"{self.settings.project}.{self.settings.dataset}"
            with _translated(f"BigQuery dataset {dataset}"):
                self.client().get_dataset(dataset, retry=self._retry(), timeout=self.settings.timeout_s)
            raise FileNotFoundError(f"{missing} (check the table settings, PIPELINE_BIGQUERY_*_TABLE)") from missing

    def checked_table(self, name: str, spec: TableSpec):
        """The table, after checking it has ``spec``'s columns with usable types (names table and column)."""
        table = self.table(name)
        spec.validate(arrow_schema(table), f"BigQuery table {self.settings.table_id(name)}")
        return table

    def feature_version(self) -> str:
        """Both feature tables' modified time, row count and etag: a load, a DML statement or a
        metadata update changes it."""
        parts = []
        for name in (self.settings.users_table, self.settings.restaurants_table):
            t = self.table(name)
            parts.append(f"{name}:{t.modified.isoformat() if t.modified else ''}:{t.num_rows}:{t.etag}")
        return hashlib.blake2b("|".join(parts).encode(), digest_size=8).hexdigest()

    def partition_version(self, day: str) -> str | None:
        """Unknown without paying for a query: a published day is kept until re-extraction is asked for."""
        return None

    def feature_file(self, kind: FeatureKind, scratch_dir: Path) -> Path:
        name = self.settings.users_table if kind.name == "users" else self.settings.restaurants_table
        return self._table_file(name, kind.spec, scratch_dir / f"{kind.name}.parquet")

    def test_files(self, scratch_dir: Path) -> list[Path]:
        return [self._table_file(self.settings.test_table, CLICKS, scratch_dir / "test_00.parquet")]

    def requests_file(self, scratch_dir: Path) -> Path:
        return self._table_file(self.settings.requests_table, REQUESTS, scratch_dir / "requests.parquet")

    def _table_file(self, name: str, spec: TableSpec, path: Path) -> Path:
        """The whole table's ``spec`` columns as one parquet file: a read session, or free REST pages."""
        table = self.checked_table(name, spec)
        stats = ReadStats("table_read", "storage" if self.storage() else "rest")
        with _translated(f"reading {table.full_table_id}"):
            if self.storage():
                batches = self._storage_batches(self.settings.table_id(name), spec.column_names, "", stats)
            else:
                pages = self.client().list_rows(table, selected_fields=[f for f in table.schema
                                                                        if f.name in spec.column_names],
                                                page_size=self.settings.page_rows, retry=self._retry(),
                                                timeout=self.settings.timeout_s)
                batches = self._counted(pages.to_arrow_iterable(bqstorage_client=None), stats)
            _write(batches, path, self.settings.page_rows, _selected(table, spec.column_names))
        return path

    def extract_clicks(self, day: str, out_dir: Path) -> Extract:
        """The day's clicks as ``part-00000.parquet``; a day with no rows is an error (it is more likely
        not loaded yet than a day without clicks), so nothing is published for it."""
        date = parse_day(day)
        table = self.checked_table(self.settings.clicks_table, CLICKS)
        self._check_partitioning(table)
        started, target = time.perf_counter(), out_dir / "part-00000.parquet"
        method = self.settings.clicks_read
        if method == "auto":
            method = "storage_read" if self.storage() else "query"
        stats = ReadStats(method, "storage" if self.storage() else "rest")
        with _translated(f"extracting {day} from {table.full_table_id}"):
            batches = (self._storage_batches(self.settings.table_id(self.settings.clicks_table), CLICKS.column_names,
                                             _day_restriction(self.settings.day_column, date), stats)
                       if method == "storage_read" else self._query_batches(date, stats))
            rows = _write(batches, target, self.settings.page_rows, _selected(table, CLICKS.column_names))
        if rows == 0:
            raise FileNotFoundError(f"BigQuery table {table.full_table_id} has no rows for {day} "
                                    f"({self.settings.day_column} = {day}): not loaded yet? Nothing was published")
        return Extract([target], rows, target.stat().st_size, f"bigquery://{self.settings.table_id(self.settings.clicks_table)}"
                       f"/{self.settings.day_column}={day}",
                       {**stats.metadata(), "bigquery_seconds": round(time.perf_counter() - started, 3)},
                       stats.notes())

    def has_day(self, day: str) -> bool:
        """Whether the day's partition holds rows: a read session's streams (free), else a COUNT query."""
        date = parse_day(day)
        table_id = self.settings.table_id(self.settings.clicks_table)
        with _translated(f"looking for {day} in {table_id}"):
            if self.storage():
                return bool(self._read_session(table_id, [self.settings.day_column],
                                               _day_restriction(self.settings.day_column, date)).streams)
            sql = f"SELECT COUNT(*) AS n FROM `{table_id}` WHERE `{self.settings.day_column}` = @day"
            job = self.client().query(sql, job_config=self._query_config(date), retry=self._retry(),
                                      timeout=self.settings.timeout_s)
            return next(iter(job.result(timeout=self.settings.timeout_s))).n > 0

    # ----- reads

    def _check_partitioning(self, table) -> None:
        column = self.settings.day_column
        schema = arrow_schema(table)
        if schema.get_field_index(column) < 0 or schema.field(column).type != pa.date32():
            raise ValueError(f"BigQuery table {table.full_table_id}: column '{column}' must be a DATE "
                             f"(PIPELINE_BIGQUERY_DAY_COLUMN, the partitioning column)")
        partitioning = table.time_partitioning
        if partitioning is None or partitioning.field != column or partitioning.type_ != "DAY":
            raise ValueError(f"BigQuery table {table.full_table_id} must be partitioned by DAY on '{column}' "
                             f"(it is {partitioning or 'not partitioned'}): every extract would scan the table")

    def _query_config(self, date: dt.date, dry_run: bool = False):
        from google.cloud import bigquery

        return bigquery.QueryJobConfig(
            query_parameters=[bigquery.ScalarQueryParameter("day", "DATE", date)], dry_run=dry_run,
            use_query_cache=not dry_run, maximum_bytes_billed=self.settings.maximum_bytes_billed or None)

    def _query_batches(self, date: dt.date, stats: ReadStats) -> Iterator[pa.RecordBatch]:
        """The day through a parameterized query: a dry run (its estimate checked against the cap),
        the query, then its result read through the Storage API or REST pages."""
        columns = ", ".join(f"`{c}`" for c in CLICKS.column_names)
        sql = (f"SELECT {columns} FROM `{self.settings.table_id(self.settings.clicks_table)}` "
               f"WHERE `{self.settings.day_column}` = @day")
        client, timeout = self.client(), self.settings.timeout_s
        dry = client.query(sql, job_config=self._query_config(date, dry_run=True), retry=self._retry(), timeout=timeout)
        stats.dry_run_bytes = int(dry.total_bytes_processed or 0)
        self._check_cost(stats.dry_run_bytes, f"query for {date}")
        job = client.query(sql, job_config=self._query_config(date), retry=self._retry(), timeout=timeout)
        rows = job.result(page_size=self.settings.page_rows, timeout=timeout, retry=self._retry())
        stats.bytes_processed = int(job.total_bytes_processed or 0)
        stats.bytes_billed = int(job.total_bytes_billed or 0)
        if self.storage():
            d = job.destination
            yield from self._storage_batches(f"{d.project}.{d.dataset_id}.{d.table_id}", CLICKS.column_names, "", stats)
        else:
            yield from self._counted(rows.to_arrow_iterable(bqstorage_client=None), stats)

    def _read_session(self, table_id: str, columns: list[str], restriction: str):
        from google.cloud.bigquery_storage_v1 import types

        project, dataset, table = table_id.split(".")
        options = types.ReadSession.TableReadOptions(selected_fields=columns, row_restriction=restriction)
        session = types.ReadSession(table=f"projects/{project}/datasets/{dataset}/tables/{table}",
                                    data_format=types.DataFormat.ARROW, read_options=options)
        # One stream: read in order on one core; bounded memory (one message at a time).
        return self.storage().create_read_session(parent=f"projects/{self.settings.project}", read_session=session,
                                                  max_stream_count=1, retry=None, timeout=self.settings.timeout_s)

    def _storage_batches(self, table_id: str, columns: list[str], restriction: str,
                         stats: ReadStats) -> Iterator[pa.RecordBatch]:
        session = self._read_session(table_id, columns, restriction)
        stats.storage_bytes += int(session.estimated_total_bytes_scanned or 0)
        self._check_cost(stats.storage_bytes, f"read of {table_id}")
        schema = pa.ipc.read_schema(pa.py_buffer(session.arrow_schema.serialized_schema))
        for stream in session.streams:
            # Each message decoded on its own and dropped before the next; the reader resumes at
            # the right offset after a broken stream.
            messages = self.storage().read_rows(stream.name, timeout=self.settings.stream_timeout_s)
            batches = (pa.ipc.read_record_batch(pa.py_buffer(m.arrow_record_batch.serialized_record_batch), schema)
                       for m in messages if m.row_count)
            yield from self._counted(batches, stats)

    def _check_cost(self, estimate: int, what: str) -> None:
        cap = self.settings.maximum_bytes_billed
        if cap and estimate > cap:
            raise CostCapExceeded(f"the {what} would read {estimate:,} bytes, over maximum_bytes_billed={cap:,} "
                                  f"(PIPELINE_BIGQUERY_MAX_BYTES_BILLED): nothing was read")

    @staticmethod
    def _counted(batches: Iterable[pa.RecordBatch], stats: ReadStats) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            stats.pages += 1
            yield batch


def _large_buffers_returned_at_once() -> None:
    """Keep glibc's mmap threshold at 1 MiB. By default it rises (up to 32 MiB) each time a large
    buffer is freed, so the Storage API's multi-MB messages then come from the heap, which fragments:
    measured on the emulator (22 MB messages), peak RSS crept up ~6 MB a message, 16 messages +250 MB;
    with the fixed threshold it stays flat. Process-wide, and a no-op off glibc."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD


def _day_restriction(column: str, date: dt.date) -> str:
    # The Storage API takes its filter as text, with no parameters: the only value here is a
    # datetime.date rendered by isoformat() (digits and hyphens), never a caller's string.
    return f"`{column}` = DATE '{date.isoformat()}'"


def _selected(table, columns: list[str]) -> pa.Schema:
    schema = arrow_schema(table)
    return pa.schema([schema.field(c) for c in columns])


def _write(batches: Iterable[pa.RecordBatch], path: Path, rows_per_group: int, schema: pa.Schema) -> int:
    sink = _ParquetSink(path, rows_per_group)
    for batch in batches:
        sink.write(batch)
    return sink.close(schema)
