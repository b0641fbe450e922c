"""Resources: where the raw data comes from, and where the pipeline writes."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from pipeline.data.bigquery import BigQuerySettings, BigQuerySource
from pipeline.data.layout import ReferenceDataset, Warehouse, parse_day
from pipeline.data.sources import LocalParquetSource, Source, SourceConfigError
from pipeline.defs.settings import resource_value, setting
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


class BigQuerySourceResource(SourceResource):
    """Google BigQuery tables (``PIPELINE_SOURCE=bigquery``): clicks partitioned by DAY on a DATE
    column, the two feature tables, the held-out rows and the requests. Read with the Storage Read
    API when google-cloud-bigquery-storage is installed, REST pages otherwise (docs/OPERATIONS.md)."""

    project: str = Field(default="", description=(
        "Google Cloud project of the dataset, also the one billed (PIPELINE_BIGQUERY_PROJECT)."))
    dataset: str = Field(default="", description="BigQuery dataset holding the tables (PIPELINE_BIGQUERY_DATASET).")
    location: str = Field(default="", description="BigQuery location of the dataset, e.g. US or asia-southeast1 "
                                                  "(PIPELINE_BIGQUERY_LOCATION; empty: the client's default).")
    clicks_table: str = Field(default="clicks", description="Click table, partitioned by DAY "
                                                            "(PIPELINE_BIGQUERY_CLICKS_TABLE).")
    day_column: str = Field(default="day", description="The clicks table's DATE partitioning column "
                                                       "(PIPELINE_BIGQUERY_DAY_COLUMN).")
    users_table: str = Field(default="user_features", description="User feature table (PIPELINE_BIGQUERY_USERS_TABLE).")
    restaurants_table: str = Field(default="restaurant_features", description=(
        "Restaurant feature table (PIPELINE_BIGQUERY_RESTAURANTS_TABLE)."))
    test_table: str = Field(default="test_clicks", description="Held-out click rows, the release gate "
                                                              "(PIPELINE_BIGQUERY_TEST_TABLE).")
    requests_table: str = Field(default="requests", description="Recommendation requests for the scoring "
                                                               "benchmark (PIPELINE_BIGQUERY_REQUESTS_TABLE).")
    credentials_file: str = Field(default="", description=(
        "Service-account key file (GOOGLE_APPLICATION_CREDENTIALS); empty: application-default credentials."))
    endpoint: str = Field(default="", description=(
        "REST endpoint of a BigQuery emulator, e.g. http://127.0.0.1:9050 (PIPELINE_BIGQUERY_ENDPOINT); "
        "empty: Google's. Set, the credentials are anonymous."))
    storage_endpoint: str = Field(default="", description=(
        "host:port of the emulator's Storage Read API (gRPC, PIPELINE_BIGQUERY_STORAGE_ENDPOINT)."))
    read_api: str = Field(default="auto", description=(
        "auto (the Storage Read API when installed), storage or rest (PIPELINE_BIGQUERY_READ_API)."))
    clicks_read: str = Field(default="auto", description=(
        "How a day of clicks is read: auto (storage_read with the Storage API, else query), storage_read "
        "(a read session restricted to the day's partition) or query (@day parameter) "
        "(PIPELINE_BIGQUERY_CLICKS_READ)."))
    maximum_bytes_billed: str = Field(default=str(1 << 30), description=(
        "Cap on the bytes one read may bill, checked against the dry run or the read session's estimate "
        "before reading; 0: no cap (PIPELINE_BIGQUERY_MAX_BYTES_BILLED)."))
    timeout_s: str = Field(default="60", description="Timeout of every BigQuery request, seconds "
                                                     "(PIPELINE_BIGQUERY_TIMEOUT_S).")
    page_rows: int = Field(default=20_000, gt=0, description="Rows per REST page and per parquet row group "
                                                              "(bounds memory).")

    def settings(self) -> BigQuerySettings:
        try:
            cap, timeout = int(self.maximum_bytes_billed), float(self.timeout_s)
        except ValueError:
            raise SourceConfigError(f"PIPELINE_BIGQUERY_MAX_BYTES_BILLED={self.maximum_bytes_billed!r} and "
                                    f"PIPELINE_BIGQUERY_TIMEOUT_S={self.timeout_s!r} must be numbers") from None
        fields = {name: getattr(self, name) for name in _BIGQUERY_FIELDS}  # every setting that has a variable
        return BigQuerySettings(**{**fields, "maximum_bytes_billed": cap, "timeout_s": timeout,
                                   "page_rows": self.page_rows})

    def open(self) -> Source:
        return BigQuerySource(self.settings())


_BIGQUERY_FIELDS = {
    "project": "PIPELINE_BIGQUERY_PROJECT", "dataset": "PIPELINE_BIGQUERY_DATASET",
    "location": "PIPELINE_BIGQUERY_LOCATION", "clicks_table": "PIPELINE_BIGQUERY_CLICKS_TABLE",
    "day_column": "PIPELINE_BIGQUERY_DAY_COLUMN", "users_table": "PIPELINE_BIGQUERY_USERS_TABLE",
    "restaurants_table": "PIPELINE_BIGQUERY_RESTAURANTS_TABLE", "test_table": "PIPELINE_BIGQUERY_TEST_TABLE",
    "requests_table": "PIPELINE_BIGQUERY_REQUESTS_TABLE", "credentials_file": "GOOGLE_APPLICATION_CREDENTIALS",
    "endpoint": "PIPELINE_BIGQUERY_ENDPOINT", "storage_endpoint": "PIPELINE_BIGQUERY_STORAGE_ENDPOINT",
    "read_api": "PIPELINE_BIGQUERY_READ_API", "clicks_read": "PIPELINE_BIGQUERY_CLICKS_READ",
    "maximum_bytes_billed": "PIPELINE_BIGQUERY_MAX_BYTES_BILLED", "timeout_s": "PIPELINE_BIGQUERY_TIMEOUT_S",
}


def source_from_settings() -> SourceResource:
    """``PIPELINE_SOURCE``: local (default) or bigquery, each field an ``EnvVar`` when its variable is set."""
    kind = setting("PIPELINE_SOURCE")
    if kind == "local":
        return LocalParquetSourceResource(dataset_dir=resource_value("PIPELINE_DATASET_DIR"),
                                          start_date=resource_value("PIPELINE_START_DATE"))
    if kind == "bigquery":
        return BigQuerySourceResource(**{name: resource_value(var) for name, var in _BIGQUERY_FIELDS.items()})
    raise SourceConfigError(f"PIPELINE_SOURCE={kind!r} is not one of local, bigquery")


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


def default_resources() -> dict:
    """Resources on embedded defaults, overridable by environment variables."""
    return {
        "warehouse": WarehouseResource(root=resource_value("PIPELINE_WAREHOUSE_DIR")),
        "source": source_from_settings(),
        "online_store": OnlineStoreResource(
            backend=resource_value("PIPELINE_ONLINE_STORE"),
            redis_url=resource_value("REDIS_URL"),
            redis_ca_file=resource_value("PIPELINE_REDIS_CA_FILE"),
            sqlite_path=resource_value("PIPELINE_SQLITE_PATH"),
        ),
    }


@dg.definitions
def resources() -> dg.Definitions:
    """The code location's resources (picked up by ``load_from_defs_folder``)."""
    return dg.Definitions(resources=default_resources())
