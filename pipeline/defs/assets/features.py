"""Feature snapshots: the user and restaurant tables as validated float32 files.

Each snapshot is written as a candidate, audited (finite features; locations on the globe; not empty
and not shrunk beyond PIPELINE_MAX_SHRINK_FRACTION of the live snapshot unless the run allows it) and
published only if it passes: a bad source table leaves the previous snapshot live.
"""

import tempfile
import time
from pathlib import Path

import dagster as dg
from pydantic import Field

from pipeline.data.features import RESTAURANTS, USERS, FeatureKind, publish_snapshot, read_source_features
from pipeline.data.shrink import ShrinkGuard
from pipeline.defs.columns import FEATURE_TABLES, RESTAURANT_SNAPSHOT, USER_SNAPSHOT, column_schema
from pipeline.defs.metadata import throughput
from pipeline.defs.policies import OWNER
from pipeline.defs.publishing import check_results, check_specs, published_metadata, published_or_failed
from pipeline.defs.resources import SourceResource, WarehouseResource
from pipeline.defs.retries import SOURCE_RETRY, only_transient_retried
from pipeline.defs.settings import SETTINGS

SOURCE_VERSION = "source_version"  # the feature_tables version a snapshot was made from

NOT_SHRUNK = ("not empty, and neither its rows nor the live snapshot's ids it keeps fall by more than "
              "PIPELINE_MAX_SHRINK_FRACTION (default 5%) unless the run sets allow_shrink")
USER_CHECKS = {"user_features_are_finite": "every user feature is a finite float32 (a NaN or inf "
                                           "would poison training)",
               "user_features_not_shrunk": NOT_SHRUNK}
RESTAURANT_CHECKS = {
    "restaurant_features_are_finite": "every restaurant feature is a finite float32",
    "restaurant_features_locations_valid": "every restaurant location is finite and on the globe",
    "restaurant_features_not_shrunk": NOT_SHRUNK}


class FeatureRefreshConfig(dg.Config):
    """What a feature refresh may do to the live tables."""

    allow_shrink: bool = Field(default=False, description=(
        "Publish a table with fewer rows or ids than the live one beyond PIPELINE_MAX_SHRINK_FRACTION (a "
        "deliberate shrink, e.g. users removed on request). An empty table is refused even so."))


feature_tables = dg.AssetSpec(
    "feature_tables", group_name="features", kinds={"parquet"}, owners=[OWNER],
    metadata=column_schema(FEATURE_TABLES),
    description=("The source's user and restaurant feature tables, outside the pipeline. feature_source_sensor "
                 "records an observation for every new version (its data version) and asks for a refresh."))


def _materialize_snapshot(kind: FeatureKind, config: FeatureRefreshConfig, source: SourceResource,
                          warehouse: WarehouseResource):
    with only_transient_retried():
        guard = ShrinkGuard(SETTINGS.publishing.max_shrink_fraction, config.allow_shrink)
        yield from _snapshot(kind, guard, source, warehouse)


def _snapshot(kind: FeatureKind, guard: ShrinkGuard, source: SourceResource, warehouse: WarehouseResource):
    started = time.perf_counter()
    src = source.open()
    source_version = src.feature_version()  # before reading: a change while reading refreshes again
    with tempfile.TemporaryDirectory(prefix="features-") as scratch:
        origin = src.feature_file(kind, Path(scratch))
        snapshot = read_source_features(origin, kind)
        published = yield from published_or_failed(
            lambda: publish_snapshot(snapshot, warehouse.layout().features(kind.name), kind, guard))
    audits = {a.name: a for a in published.audits}
    finite = audits[f"{kind.check_prefix}_are_finite"]
    yield dg.MaterializeResult(
        metadata={
            **throughput(len(snapshot.ids), published.bytes, time.perf_counter() - started),
            **published_metadata(published),
            "features": snapshot.values.shape[1],
            "non_finite_values": finite.metadata["non_finite_values"],
            "invalid_locations": finite.metadata.get("invalid_locations", 0),
            "content_version": snapshot.version,
            "ids_version": snapshot.ids_version,
            "origin": dg.MetadataValue.path(str(origin)),
            SOURCE_VERSION: source_version,
        },
        data_version=dg.DataVersion(snapshot.version),
        check_results=check_results(published.audits),
    )


@dg.asset(group_name="features", kinds={"parquet", "arrow"}, pool="user_features", deps=[feature_tables],
          owners=[OWNER], code_version="1", metadata=column_schema(USER_SNAPSHOT),
          check_specs=check_specs("user_features", USER_CHECKS), retry_policy=SOURCE_RETRY)
def user_features(config: FeatureRefreshConfig, source: SourceResource, warehouse: WarehouseResource):
    """Snapshot of user features (user_id, f00–f29) as float32, sorted by id; published only
    when every value is finite and it keeps the live snapshot's users (see FeatureRefreshConfig)."""
    yield from _materialize_snapshot(USERS, config, source, warehouse)


@dg.asset(group_name="features", kinds={"parquet", "arrow"}, pool="restaurant_features", deps=[feature_tables],
          owners=[OWNER], code_version="1", metadata=column_schema(RESTAURANT_SNAPSHOT),
          check_specs=check_specs("restaurant_features", RESTAURANT_CHECKS), retry_policy=SOURCE_RETRY)
def restaurant_features(config: FeatureRefreshConfig, source: SourceResource, warehouse: WarehouseResource):
    """Snapshot of restaurant features (restaurant_id, latitude, longitude, f00–f09), features as
    float32, sorted by id; published only when every value is finite, every location valid, and it
    keeps the live snapshot's restaurants (see FeatureRefreshConfig)."""
    yield from _materialize_snapshot(RESTAURANTS, config, source, warehouse)
