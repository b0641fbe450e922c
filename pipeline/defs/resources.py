"""Resources: where the raw data comes from, and where the pipeline writes."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from pipeline.data.bigquery import BigQuerySettings, BigQuerySource
from pipeline.data.layout import ReferenceDataset, Warehouse, parse_day
from pipeline.data.sources import LocalParquetSource, Source, SourceConfigError
from pipeline.defs.settings import SETTINGS, resource_value
from pipeline.settings import OnlineStoreSettings, PathSettings, Settings, SettingsError, SourceSettings
from pipeline.settings.fields import spec_of, specs
from pipeline.store.base import FeatureStore
from pipeline.store.factory import open_store, resolve_backend


class WarehouseResource(dg.ConfigurableResource):
    """Root directory of every file the pipeline writes (``PIPELINE_WAREHOUSE_DIR``)."""

    root: str = Field(description="Directory every artifact is published under (PIPELINE_WAREHOUSE_DIR).")

    def layout(self) -> Warehouse:
        return Warehouse(Path(self.root).resolve())


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

    dataset_dir: str = Field(description="The reference-format dataset directory (PIPELINE_DATASET_DIR).")
    start_date: str = Field(description="Day of shard train_00, YYYY-MM-DD (PIPELINE_START_DATE).")

    def dataset(self) -> ReferenceDataset:
        return ReferenceDataset(Path(self.dataset_dir).resolve(), parse_day(self.start_date))

    def open(self) -> Source:
        return LocalParquetSource(self.dataset())


def _bigquery_field(name: str):
    """A resource field of BigQuery setting ``name``: its default as text, its description and variable."""
    spec = spec_of(BigQuerySettings, name)
    return Field(default=spec.default_text(), description=f"{spec.description} ({spec.variable}).")


class BigQuerySourceResource(SourceResource):
    """Google BigQuery tables (``PIPELINE_SOURCE=bigquery``): clicks partitioned by DAY on a DATE
    column, the two feature tables, the held-out rows and the requests. Read with the Storage Read
    API when google-cloud-bigquery-storage is installed, REST pages otherwise (docs/OPERATIONS.md)."""

    project: str = _bigquery_field("project")
    dataset: str = _bigquery_field("dataset")
    location: str = _bigquery_field("location")
    clicks_table: str = _bigquery_field("clicks_table")
    day_column: str = _bigquery_field("day_column")
    users_table: str = _bigquery_field("users_table")
    restaurants_table: str = _bigquery_field("restaurants_table")
    test_table: str = _bigquery_field("test_table")
    requests_table: str = _bigquery_field("requests_table")
    credentials_file: str = _bigquery_field("credentials_file")
    endpoint: str = _bigquery_field("endpoint")
    storage_endpoint: str = _bigquery_field("storage_endpoint")
    read_api: str = _bigquery_field("read_api")
    clicks_read: str = _bigquery_field("clicks_read")
    maximum_bytes_billed: str = _bigquery_field("maximum_bytes_billed")
    timeout_s: str = _bigquery_field("timeout_s")
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
                                          start_date=resource_value(SourceSettings, "start_date"))
    return BigQuerySourceResource(**{name: resource_value(BigQuerySettings, name) for name in specs(BigQuerySettings)})


class OnlineStoreResource(dg.ConfigurableResource):
    """The online feature store read on every request: SQLite (embedded default, WAL mode, a
    file under the data directory) or Redis (``REDIS_URL``)."""

    backend: str = Field(default="", description=(
        "sqlite or redis; empty: redis when redis_url is set, else sqlite (PIPELINE_ONLINE_STORE)."))
    redis_url: str = Field(default="", description=(
        "redis://[[user]:password@]host:port/db of the Redis store, rediss:// for TLS (REDIS_URL; set it as an "
        "environment variable so the password stays out of the run's stored configuration)."))
    redis_ca_file: str = Field(default="", description=(
        "CA file verifying a rediss:// server (PIPELINE_REDIS_CA_FILE; empty: the system's CAs)."))
    sqlite_path: str = Field(description="File of the SQLite store (PIPELINE_SQLITE_PATH).")

    def open(self) -> FeatureStore:
        return open_store(self.backend, self.redis_url, str(Path(self.sqlite_path).resolve()),
                          redis_ca_file=self.redis_ca_file)

    def describe(self) -> str:
        return resolve_backend(self.backend, self.redis_url)


def default_resources(settings: Settings) -> dict:
    """Resources on the settings' values; a variable that is set is bound as an ``EnvVar``."""
    return {
        "warehouse": WarehouseResource(root=resource_value(PathSettings, "warehouse_dir")),
        "source": source_from_settings(settings),
        "online_store": OnlineStoreResource(**{name: resource_value(OnlineStoreSettings, name)
                                               for name in specs(OnlineStoreSettings)}),
    }


@dg.definitions
def resources() -> dg.Definitions:
    """The code location's resources (picked up by ``load_from_defs_folder``)."""
    return dg.Definitions(resources=default_resources(SETTINGS))
