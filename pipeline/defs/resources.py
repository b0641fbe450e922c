"""Resources: where the raw data comes from, and where the pipeline writes."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from pipeline.data.layout import ReferenceDataset, Warehouse, parse_day
from pipeline.data.sources import LocalParquetSource, Source
from pipeline.defs.settings import resource_value
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
        raise NotImplementedError

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

    def has_day(self, day: str) -> bool:
        return self.dataset().shard_of_day(day) in self.dataset().train_shards()


class OnlineStoreResource(dg.ConfigurableResource):
    """The online feature store read on every request: SQLite (embedded default, WAL mode, a
    file under the data directory) or Redis (``REDIS_URL``)."""

    backend: str = Field(default="", description=(
        "sqlite or redis; empty: redis when redis_url is set, else sqlite (PIPELINE_ONLINE_STORE)."))
    redis_url: str = Field(default="", description="redis://host:port/db of the Redis store (REDIS_URL).")
    sqlite_path: str = Field(description="File of the SQLite store (PIPELINE_SQLITE_PATH).")

    def open(self) -> FeatureStore:
        return open_store(self.backend, self.redis_url, str(Path(self.sqlite_path).resolve()))

    def describe(self) -> str:
        return resolve_backend(self.backend, self.redis_url)


def default_resources() -> dict:
    """Resources on embedded defaults, overridable by environment variables."""
    return {
        "warehouse": WarehouseResource(root=resource_value("PIPELINE_WAREHOUSE_DIR")),
        "source": LocalParquetSourceResource(
            dataset_dir=resource_value("PIPELINE_DATASET_DIR"),
            start_date=resource_value("PIPELINE_START_DATE"),
        ),
        "online_store": OnlineStoreResource(
            backend=resource_value("PIPELINE_ONLINE_STORE"),
            redis_url=resource_value("REDIS_URL"),
            sqlite_path=resource_value("PIPELINE_SQLITE_PATH"),
        ),
    }


@dg.definitions
def resources() -> dg.Definitions:
    """The code location's resources (picked up by ``load_from_defs_folder``)."""
    return dg.Definitions(resources=default_resources())
