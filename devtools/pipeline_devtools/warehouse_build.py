"""The data assets' work done directly on a local reference dataset, without Dagster: feature
snapshots, then processed partitions straight from the train shards. For tests and benchmarks
that need a warehouse; the pipeline itself goes through the assets."""

from __future__ import annotations

from pathlib import Path

from pipeline.data.clicks import DEFAULT_CHUNK_ROWS, publish_partition
from pipeline.data.features import RESTAURANTS, USERS, FeatureSnapshot, publish_snapshot, read_source_features
from pipeline.data.layout import ReferenceDataset, Warehouse


def build_from_reference(dataset: ReferenceDataset, warehouse: Warehouse, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                         days: int | None = None) -> tuple[FeatureSnapshot, FeatureSnapshot]:
    """Snapshot both feature tables into ``warehouse`` and process the first ``days`` days (all
    when None, none when 0); return the (user, restaurant) snapshots."""
    users = read_source_features(dataset.user_features, USERS)
    restaurants = read_source_features(dataset.restaurant_features, RESTAURANTS)
    publish_snapshot(users, warehouse.user_features, USERS)
    publish_snapshot(restaurants, warehouse.restaurant_features, RESTAURANTS)
    for day in dataset.days()[:days]:
        publish_partition([dataset.shard_for_day(day)], users.index, restaurants.index,
                          warehouse.processed_clicks(day), chunk_rows=chunk_rows, day=day,
                          users_ids_version=users.ids_version, restaurants_ids_version=restaurants.ids_version)
    return users, restaurants


def build_warehouse(dataset: ReferenceDataset, root: Path, chunk_rows: int, days: int | None = None) -> Warehouse:
    """Feature snapshots and processed partitions of ``dataset`` under ``root``, built with the
    same functions the assets use."""
    warehouse = Warehouse(root)
    build_from_reference(dataset, warehouse, chunk_rows, days)
    return warehouse
