"""Feature snapshots: the user and restaurant tables as validated float32 files."""

import tempfile
import time
from pathlib import Path

import dagster as dg

from pipeline.data.features import RESTAURANTS, USERS, FeatureKind, read_source_features, write_snapshot
from pipeline.defs.metadata import throughput
from pipeline.defs.resources import SourceResource, WarehouseResource


def snapshot_path(warehouse: WarehouseResource, kind: FeatureKind) -> Path:
    layout = warehouse.layout()
    return layout.user_features if kind is USERS else layout.restaurant_features


def _materialize_snapshot(kind: FeatureKind, source: SourceResource,
                          warehouse: WarehouseResource) -> dg.MaterializeResult:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="features-") as scratch:
        origin = source.open().feature_file(kind, Path(scratch))
        snapshot = read_source_features(origin, kind)
        size = write_snapshot(snapshot, snapshot_path(warehouse, kind), kind)
    non_finite = snapshot.non_finite_counts()
    return dg.MaterializeResult(
        metadata={
            **throughput(len(snapshot.ids), size, time.perf_counter() - started),
            "features": snapshot.values.shape[1],
            "non_finite_values": sum(non_finite.values()),
            "invalid_locations": snapshot.invalid_locations(),
            "version": snapshot.version,
            "ids_version": snapshot.ids_version,
            "origin": dg.MetadataValue.path(str(origin)),
            "path": dg.MetadataValue.path(str(snapshot_path(warehouse, kind))),
        },
        data_version=dg.DataVersion(snapshot.version),
    )


@dg.asset(group_name="features", kinds={"parquet", "arrow"})
def user_features(source: SourceResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Snapshot of user features (user_id, f00–f29) as float32, sorted by id."""
    return _materialize_snapshot(USERS, source, warehouse)


@dg.asset(group_name="features", kinds={"parquet", "arrow"})
def restaurant_features(source: SourceResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Snapshot of restaurant features (restaurant_id, latitude, longitude, f00–f09), features as
    float32, sorted by id."""
    return _materialize_snapshot(RESTAURANTS, source, warehouse)
