"""The pipeline's :class:`~pipeline.data.sources.Source` over BigQuery tables."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.data.bigquery import settings as checks
from pipeline.data.bigquery.clients import Clients
from pipeline.data.bigquery.errors import translated
from pipeline.data.bigquery.reads import Reads, ReadStats, counted, day_restriction
from pipeline.data.bigquery.sink import arrow_schema, selected, write
from pipeline.data.features import FeatureKind
from pipeline.data.layout import parse_day
from pipeline.data.schema import CLICKS, REQUESTS, TableSpec
from pipeline.data.sources import Extract
from pipeline.feedback import click_events
from pipeline.settings.bigquery import BigQuerySettings


@dataclass
class BigQuerySource:
    """Raw files from BigQuery tables; the settings are checked when the source is made."""

    settings: BigQuerySettings
    clients: Clients = field(init=False, repr=False)
    reads: Reads = field(init=False, repr=False)

    def __post_init__(self):
        checks.check(self.settings)
        self.clients = Clients(self.settings)
        self.reads = Reads(self.clients)

    def client(self):
        return self.clients.bigquery()

    def storage(self):
        """The Storage Read client, or None when reads go over REST."""
        return self.clients.storage()

    def describe(self) -> str:
        where = self.settings.endpoint or "bigquery.googleapis.com"
        return f"BigQuery {self.settings.project}.{self.settings.dataset} at {where}"

    def table(self, name: str):
        """The table's metadata (free: no bytes read). Not found: says whether the dataset or the table is missing."""
        table_id = self.settings.table_id(name)
        retry, timeout = self.clients.retry(), self.settings.timeout_s
        try:
            with translated(f"BigQuery table {table_id}"):
                return self.client().get_table(table_id, retry=retry, timeout=timeout)
        except FileNotFoundError as missing:
            dataset = f"{self.settings.project}.{self.settings.dataset}"
            with translated(f"BigQuery dataset {dataset}"):
                self.client().get_dataset(dataset, retry=retry, timeout=timeout)
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
        with translated(f"reading {table.full_table_id}"):
            if self.storage():
                batches = self.reads.storage_batches(self.settings.table_id(name), spec.column_names, "", stats)
            else:
                pages = self.client().list_rows(table, selected_fields=[f for f in table.schema
                                                                        if f.name in spec.column_names],
                                                page_size=self.settings.page_rows, retry=self.clients.retry(),
                                                timeout=self.settings.timeout_s)
                batches = counted(pages.to_arrow_iterable(bqstorage_client=None), stats)
            write(batches, path, self.settings.page_rows, selected(table, spec.column_names))
        return path

    def extract_clicks(self, day: str, out_dir: Path) -> Extract:
        """The day's clicks as ``part-00000.parquet``; a day with no rows is an error (it is more likely
        not loaded yet than a day without clicks), so nothing is published for it."""
        date, s = parse_day(day), self.settings
        table = self.checked_table(s.clicks_table, CLICKS)
        self.reads.check_partitioning(table)
        started, target = time.perf_counter(), out_dir / "part-00000.parquet"
        method = s.clicks_read
        if method == "auto":
            method = "storage_read" if self.storage() else "query"
        stats = ReadStats(method, "storage" if self.storage() else "rest")
        with translated(f"extracting {day} from {table.full_table_id}"):
            batches = (self.reads.storage_batches(s.table_id(s.clicks_table), CLICKS.column_names,
                                                  day_restriction(s.day_column, date), stats)
                       if method == "storage_read" else self.reads.query_batches(date, stats))
            rows = write(batches, target, s.page_rows, selected(table, CLICKS.column_names))
        if rows == 0:
            raise FileNotFoundError(f"BigQuery table {table.full_table_id} has no rows for {day} "
                                    f"({s.day_column} = {day}): not loaded yet? Nothing was published")
        return Extract([target], rows, target.stat().st_size, f"bigquery://{s.table_id(s.clicks_table)}"
                       f"/{s.day_column}={day}",
                       {**stats.metadata(), "bigquery_seconds": round(time.perf_counter() - started, 3)},
                       stats.notes())

    def click_event_files(self, day: str, scratch_dir: Path) -> list[Path]:
        """The day's click events as one parquet file in ``scratch_dir``: a read session restricted
        to the day's partition (or a parameterized query over REST), cost-capped like a click extract."""
        date, s = parse_day(day), self.settings
        table = self.table(s.click_events_table)
        self.reads.check_partitioning(table)
        columns = list(click_events.SCHEMA.names)
        missing = [c for c in columns if c not in {f.name for f in table.schema}]
        if missing:
            raise ValueError(f"BigQuery table {table.full_table_id}: column {missing[0]} missing "
                             f"(click events need {', '.join(columns)})")
        stats = ReadStats("storage_read" if self.storage() else "query", "storage" if self.storage() else "rest")
        target = scratch_dir / f"click_events-{day}.parquet"
        with translated(f"reading {day} of {table.full_table_id}"):
            batches = (self.reads.storage_batches(s.table_id(s.click_events_table), columns,
                                                  day_restriction(s.day_column, date), stats)
                       if self.storage() else self.reads.query_batches(date, stats, s.click_events_table, columns))
            write(batches, target, s.page_rows, selected(table, columns))
        return [target]

    def click_events_version(self, day: str) -> str | None:
        """None: telling would cost a read (late clicks are taken when a day's impressions change,
        or when the day is closed again by hand)."""
        return None

    def has_day(self, day: str) -> bool:
        """Whether the day's partition holds rows: a read session's streams (free), else a COUNT query."""
        date, s = parse_day(day), self.settings
        table_id = s.table_id(s.clicks_table)
        with translated(f"looking for {day} in {table_id}"):
            if self.storage():
                return bool(self.reads.read_session(table_id, [s.day_column],
                                                    day_restriction(s.day_column, date)).streams)
            sql = f"SELECT COUNT(*) AS n FROM `{table_id}` WHERE `{s.day_column}` = @day"
            job = self.client().query(sql, job_config=self.reads.query_config(date), retry=self.clients.retry(),
                                      timeout=s.timeout_s)
            return next(iter(job.result(timeout=s.timeout_s))).n > 0
