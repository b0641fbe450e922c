"""The read paths: a read session of the Storage Read API (optionally restricted to a day's
partition), or a parameterized query of a day paged over REST or read through a session; each
checked against the cost cap before any row is read, and counted in :class:`ReadStats`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pyarrow as pa

from pipeline.data.bigquery.clients import Clients
from pipeline.data.bigquery.errors import CostCapExceeded
from pipeline.data.bigquery.sink import arrow_schema
from pipeline.data.schema import CLICKS


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


def day_restriction(column: str, date: dt.date) -> str:
    # The Storage API takes its filter as text, with no parameters: the only value here is a
    # datetime.date rendered by isoformat() (digits and hyphens), never a caller's string.
    return f"`{column}` = DATE '{date.isoformat()}'"


def counted(batches: Iterable[pa.RecordBatch], stats: ReadStats) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        stats.pages += 1
        yield batch


@dataclass
class Reads:
    """Reads of one source's tables through its :class:`Clients`."""

    clients: Clients

    @property
    def settings(self):
        return self.clients.settings

    def check_partitioning(self, table) -> None:
        """ValueError unless the clicks table is partitioned by DAY on its DATE day column."""
        column = self.settings.day_column
        schema = arrow_schema(table)
        if schema.get_field_index(column) < 0 or schema.field(column).type != pa.date32():
            raise ValueError(f"BigQuery table {table.full_table_id}: column '{column}' must be a DATE "
                             f"(PIPELINE_BIGQUERY_DAY_COLUMN, the partitioning column)")
        partitioning = table.time_partitioning
        if partitioning is None or partitioning.field != column or partitioning.type_ != "DAY":
            raise ValueError(f"BigQuery table {table.full_table_id} must be partitioned by DAY on '{column}' "
                             f"(it is {partitioning or 'not partitioned'}): every extract would scan the table")

    def query_config(self, date: dt.date, dry_run: bool = False):
        from google.cloud import bigquery

        return bigquery.QueryJobConfig(
            query_parameters=[bigquery.ScalarQueryParameter("day", "DATE", date)], dry_run=dry_run,
            use_query_cache=not dry_run, maximum_bytes_billed=self.settings.maximum_bytes_billed or None)

    def query_batches(self, date: dt.date, stats: ReadStats, table: str | None = None,
                      columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        """The day of ``table`` (default: the clicks) through a parameterized query: a dry run (its
        estimate checked against the cap), the query, then its result read through the Storage
        API or REST pages."""
        columns = columns or CLICKS.column_names
        names = ", ".join(f"`{c}`" for c in columns)
        sql = (f"SELECT {names} FROM `{self.settings.table_id(table or self.settings.clicks_table)}` "
               f"WHERE `{self.settings.day_column}` = @day")
        client, timeout, retry = self.clients.bigquery(), self.settings.timeout_s, self.clients.retry()
        dry = client.query(sql, job_config=self.query_config(date, dry_run=True), retry=retry, timeout=timeout)
        stats.dry_run_bytes = int(dry.total_bytes_processed or 0)
        self.check_cost(stats.dry_run_bytes, f"query for {date}")
        job = client.query(sql, job_config=self.query_config(date), retry=retry, timeout=timeout)
        rows = job.result(page_size=self.settings.page_rows, timeout=timeout, retry=retry)
        stats.bytes_processed = int(job.total_bytes_processed or 0)
        stats.bytes_billed = int(job.total_bytes_billed or 0)
        if self.clients.storage():
            d = job.destination
            yield from self.storage_batches(f"{d.project}.{d.dataset_id}.{d.table_id}", columns, "", stats)
        else:
            yield from counted(rows.to_arrow_iterable(bqstorage_client=None), stats)

    def read_session(self, table_id: str, columns: list[str], restriction: str):
        from google.cloud.bigquery_storage_v1 import types

        project, dataset, table = table_id.split(".")
        options = types.ReadSession.TableReadOptions(selected_fields=columns, row_restriction=restriction)
        session = types.ReadSession(table=f"projects/{project}/datasets/{dataset}/tables/{table}",
                                    data_format=types.DataFormat.ARROW, read_options=options)
        # One stream: read in order on one core; bounded memory (a message written while at most the
        # next one arrives: the channel's fixed window, clients.py).
        return self.clients.storage().create_read_session(
            parent=f"projects/{self.settings.project}", read_session=session, max_stream_count=1, retry=None,
            timeout=self.settings.timeout_s)

    def storage_batches(self, table_id: str, columns: list[str], restriction: str,
                        stats: ReadStats) -> Iterator[pa.RecordBatch]:
        session = self.read_session(table_id, columns, restriction)
        stats.storage_bytes += int(session.estimated_total_bytes_scanned or 0)
        self.check_cost(stats.storage_bytes, f"read of {table_id}")
        schema = pa.ipc.read_schema(pa.py_buffer(session.arrow_schema.serialized_schema))
        for stream in session.streams:
            # Each message decoded on its own and dropped before the next; the reader resumes at
            # the right offset after a broken stream.
            messages = self.clients.storage().read_rows(stream.name, timeout=self.settings.stream_timeout_s)
            batches = (pa.ipc.read_record_batch(pa.py_buffer(m.arrow_record_batch.serialized_record_batch), schema)
                       for m in messages if m.row_count)
            yield from counted(batches, stats)

    def check_cost(self, estimate: int, what: str) -> None:
        cap = self.settings.maximum_bytes_billed
        if cap and estimate > cap:
            raise CostCapExceeded(f"the {what} would read {estimate:,} bytes, over maximum_bytes_billed={cap:,} "
                                  f"(PIPELINE_BIGQUERY_MAX_BYTES_BILLED): nothing was read")
