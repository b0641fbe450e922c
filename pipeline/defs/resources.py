"""Resources: where the raw data comes from, and where the pipeline writes."""

from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from pipeline.data.bigquery import BigQuerySettings, BigQuerySource
from pipeline.data.layout import ReferenceDataset, Warehouse, parse_day
from pipeline.data.sources import LocalParquetSource, Source, SourceConfigError
from pipeline.defs.settings import SETTINGS, resource_value
from pipeline.settings import (
    FeedbackSettings,
    OnlineStoreSettings,
    PathSettings,
    Settings,
    SettingsError,
    SourceSettings,
)
from pipeline.settings.fields import spec_of, specs
from pipeline.store.base import FeatureStore
from pipeline.store.factory import open_store, resolve_backend


def _setting_field(group: type, name: str, required: bool = False) -> Any:
    """A resource field of setting ``name`` of ``group``: its default as text, its description and variable."""
    spec = spec_of(group, name)
    description = f"{spec.description} ({spec.variable})."
    if required:
        return Field(description=description)
    return Field(default=spec.default_text(), description=description)


class WarehouseResource(dg.ConfigurableResource):
    """Root directory of every file the pipeline writes (``PIPELINE_WAREHOUSE_DIR``)."""

    root: str = _setting_field(PathSettings, "warehouse_dir", required=True)
    impression_log_dir: str = _setting_field(FeedbackSettings, "impression_log_dir")

    def layout(self) -> Warehouse:
        return Warehouse(Path(self.root).resolve())

    def impression_log(self) -> Path:
        """Where the API publishes impression log segments."""
        return FeedbackSettings(impression_log_dir=self.impression_log_dir).log_dir(self.root)


class SourceResource(dg.ConfigurableResource):
    """Base of the raw-data sources. Assets depend on this type only; which source is bound is
    configuration (local parquet by default)."""

    def open(self) -> Source:
        raise NotImplementedError

    def has_day(self, day: str) -> bool:
        """Whether the source holds a click partition for ``day`` (the schedule skips if not)."""
        return self.open().has_day(day)

    def feature_version(self) -> str:
        """The current version of the feature tables (the refresh sensor's cursor)."""
        return self.open().feature_version()


class LocalParquetSourceResource(SourceResource):
    """A reference-format dataset directory on local disk (``PIPELINE_DATASET_DIR``); its shard
    ``train/train_NN.parquet`` is the click partition of day ``start_date + NN``."""

    dataset_dir: str = _setting_field(PathSettings, "dataset_dir", required=True)
    start_date: str = _setting_field(SourceSettings, "start_date", required=True)
    click_events_dir: str = _setting_field(FeedbackSettings, "click_events_dir")

    def dataset(self) -> ReferenceDataset:
        return ReferenceDataset(Path(self.dataset_dir).resolve(), parse_day(self.start_date))

    def open(self) -> Source:
        return LocalParquetSource(self.dataset(), Path(self.click_events_dir).resolve())


class BigQuerySourceResource(SourceResource):
    """Google BigQuery tables (``PIPELINE_SOURCE=bigquery``): clicks partitioned by DAY on a DATE
    column, the two feature tables, the held-out rows and the requests. Read with the Storage Read
    API when google-cloud-bigquery-storage is installed, REST pages otherwise (docs/OPERATIONS.md)."""

    project: str = _setting_field(BigQuerySettings, "project")
    dataset: str = _setting_field(BigQuerySettings, "dataset")
    location: str = _setting_field(BigQuerySettings, "location")
    clicks_table: str = _setting_field(BigQuerySettings, "clicks_table")
    day_column: str = _setting_field(BigQuerySettings, "day_column")
    users_table: str = _setting_field(BigQuerySettings, "users_table")
    restaurants_table: str = _setting_field(BigQuerySettings, "restaurants_table")
    test_table: str = _setting_field(BigQuerySettings, "test_table")
    requests_table: str = _setting_field(BigQuerySettings, "requests_table")
    click_events_table: str = _setting_field(BigQuerySettings, "click_events_table")
    credentials_file: str = _setting_field(BigQuerySettings, "credentials_file")
    endpoint: str = _setting_field(BigQuerySettings, "endpoint")
    storage_endpoint: str = _setting_field(BigQuerySettings, "storage_endpoint")
    read_api: str = _setting_field(BigQuerySettings, "read_api")
    clicks_read: str = _setting_field(BigQuerySettings, "clicks_read")
    maximum_bytes_billed: str = _setting_field(BigQuerySettings, "maximum_bytes_billed")
    timeout_s: str = _setting_field(BigQuerySettings, "timeout_s")
    page_rows: int = Field(default=20_000, gt=0, description="Rows per REST page and per parquet row group "
                                                              "(bounds memory).")

    def settings(self) -> BigQuerySettings:
        """The fields as typed settings, each parsed as its variable would be (errors name the variable)."""
        try:
            values = {name: spec.parse(str(getattr(self, name))) for name, spec in specs(BigQuerySettings).items()}
        except SettingsError as exc:
            raise SourceConfigError(str(exc)) from None
        return BigQuerySettings(**values, page_rows=self.page_rows)

    def open(self) -> Source:
        return BigQuerySource(self.settings())


def source_from_settings(settings: Settings) -> SourceResource:
    """``PIPELINE_SOURCE``: local (default) or bigquery, each field an ``EnvVar`` when its variable is set."""
    if settings.source.kind == "local":
        return LocalParquetSourceResource(dataset_dir=resource_value(PathSettings, "dataset_dir"),
                                          start_date=resource_value(SourceSettings, "start_date"),
                                          click_events_dir=resource_value(FeedbackSettings, "click_events_dir"))
    # every setting of BigQuerySettings is a str field of the resource (page_rows, an int, is none of them)
    return BigQuerySourceResource(**{name: resource_value(BigQuerySettings, name)  # type: ignore[arg-type]
                                     for name in specs(BigQuerySettings)})


class OnlineStoreResource(dg.ConfigurableResource):
    """The online feature store read on every request: SQLite (embedded default, WAL mode, a
    file under the data directory) or Redis (``REDIS_URL``)."""

    backend: str = _setting_field(OnlineStoreSettings, "backend")
    redis_url: str = _setting_field(OnlineStoreSettings, "redis_url")  # an EnvVar: the password stays out of runs
    redis_ca_file: str = _setting_field(OnlineStoreSettings, "redis_ca_file")
    sqlite_path: str = _setting_field(OnlineStoreSettings, "sqlite_path", required=True)

    def open(self) -> FeatureStore:
        return open_store(self.backend, self.redis_url, str(Path(self.sqlite_path).resolve()),
                          redis_ca_file=self.redis_ca_file)

    def describe(self) -> str:
        return resolve_backend(self.backend, self.redis_url)


def default_resources(settings: Settings) -> dict:
    """Resources on the settings' values; a variable that is set is bound as an ``EnvVar``."""
    return {
        "warehouse": WarehouseResource(root=resource_value(PathSettings, "warehouse_dir"),
                                       impression_log_dir=resource_value(FeedbackSettings, "impression_log_dir")),
        "source": source_from_settings(settings),
        "online_store": OnlineStoreResource(**{name: resource_value(OnlineStoreSettings, name)
                                               for name in specs(OnlineStoreSettings)}),
    }


@dg.definitions
def resources() -> dg.Definitions:
    """The code location's resources (picked up by ``load_from_defs_folder``)."""
    return dg.Definitions(resources=default_resources(SETTINGS))
