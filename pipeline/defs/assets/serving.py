"""What a recommendation needs: the H3 restaurant index, the online features, and proof of speed."""

import tempfile
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow.parquet as pq
from pydantic import Field

from pipeline.data.features import RESTAURANTS, USERS, load_snapshot
from pipeline.data.shrink import ShrinkGuard
from pipeline.defs.assets.features import NOT_SHRUNK, FeatureRefreshConfig
from pipeline.defs.assets.model import model_exports
from pipeline.defs.charts import histogram_svg, picture
from pipeline.defs.columns import GEO_INDEX, column_schema
from pipeline.defs.metadata import throughput
from pipeline.defs.policies import FOLLOWS_PARENTS, ONLINE_FEATURES_FRESHNESS, OWNER
from pipeline.defs.publishing import check_results, check_specs, published_metadata, published_or_failed
from pipeline.defs.resources import OnlineStoreResource, SourceResource, WarehouseResource
from pipeline.defs.settings import SETTINGS
from pipeline.geo.index import GEO_CHECK, GeoIndex
from pipeline.serving.loadgen import closed_loop, open_loop
from pipeline.serving.recommender import Recommender
from pipeline.serving.request import Request
from pipeline.serving.scorer import live_scorer
from pipeline.store.base import SHRINK_CHECK, STORE_CHECK, FeatureTable

LATENCY_CHECK = "p95_within_reference_bar"
REFERENCE_P95_MS = 100.0


@dg.asset(group_name="serving", kinds={"h3", "arrow"}, deps=["restaurant_features"], pool="geo_index",
          owners=[OWNER], code_version="1", automation_condition=FOLLOWS_PARENTS, metadata=column_schema(GEO_INDEX),
          check_specs=check_specs("restaurant_geo_index", {GEO_CHECK: (
              "the candidate holds exactly the snapshot's restaurants, sorted by cell, with a lookup that "
              "covers every row once")}))
def restaurant_geo_index(warehouse: WarehouseResource):
    """Restaurants (id, latitude, longitude, H3 cell int64 at resolution 8) sorted by cell, with a
    cell → rows lookup, published as one artifact: exact distance filtering of candidate lists,
    and retrieval within a radius."""
    started = time.perf_counter()
    layout = warehouse.layout()
    restaurants = load_snapshot(layout.restaurant_features, RESTAURANTS)
    if restaurants.locations is None:  # a restaurant snapshot always has them (RESTAURANTS.location_columns)
        raise ValueError(f"the restaurant snapshot {restaurants.version} has no locations")
    index = GeoIndex.build(restaurants.ids, restaurants.locations[:, 0], restaurants.locations[:, 1])
    published = yield from published_or_failed(lambda: index.publish(layout.geo_index, restaurants.ids))
    per_cell = np.diff(np.r_[index.cell_starts, len(index.cells)])
    yield dg.MaterializeResult(metadata={
        **throughput(len(index.ids), published.bytes, time.perf_counter() - started),
        **published_metadata(published), "restaurants_version": restaurants.version,
        "cells": len(index.unique_cells), "h3_resolution": index.resolution,
        "restaurants_per_cell_mean": float(per_cell.mean()) if len(per_cell) else 0.0,
        "restaurants_per_cell_max": int(per_cell.max()) if len(per_cell) else 0},
        check_results=check_results(published.audits))


@dg.asset(group_name="serving", kinds={"sqlite", "redis"}, deps=["user_features", "restaurant_features"],
          pool="online_store", owners=[OWNER], code_version="1", automation_condition=FOLLOWS_PARENTS,
          freshness_policy=ONLINE_FEATURES_FRESHNESS, check_specs=check_specs("online_features", {STORE_CHECK: (
              "the new version holds every row of both snapshots and sampled rows read back byte for byte; "
              "checked before it is made live"),
              SHRINK_CHECK: f"the load's users and restaurants, against the live store version: {NOT_SHRUNK}"}))
def online_features(context: dg.AssetExecutionContext, config: FeatureRefreshConfig, warehouse: WarehouseResource,
                    online_store: OnlineStoreResource):
    """User and restaurant features in the online store (float32 bytes per entity), loaded as a new
    version beside the live one and made live by one switch once complete and checked; requests
    always read one version. A load with no users or restaurants, or fewer than the live version
    beyond PIPELINE_MAX_SHRINK_FRACTION (unless the run sets allow_shrink), is refused."""
    layout = warehouse.layout()
    started = time.perf_counter()
    users = load_snapshot(layout.user_features, USERS)
    restaurants = load_snapshot(layout.restaurant_features, RESTAURANTS)
    store = online_store.open()
    try:
        version = yield from published_or_failed(
            lambda: store.publish(FeatureTable.of(users), FeatureTable.of(restaurants), on_wait=context.log.info,
                                  guard=ShrinkGuard(SETTINGS.publishing.max_shrink_fraction, config.allow_shrink)))
    finally:
        store.close()
    rows = len(users.ids) + len(restaurants.ids)
    yield dg.MaterializeResult(metadata={
        **throughput(rows, users.values.nbytes + restaurants.values.nbytes, time.perf_counter() - started),
        "backend": online_store.describe(), "store_version": version.number,
        "previous_store_version": version.previous or 0,
        "users_rows": len(users.ids), "restaurants_rows": len(restaurants.ids),
        "users_version": users.version, "restaurants_version": restaurants.version},
        data_version=dg.DataVersion(f"{users.version}-{restaurants.version}"),
        check_results=check_results(version.audits))


class ScoringBenchmarkConfig(dg.Config):
    """How long and how hard to replay requests.parquet through the recommender."""

    rate: float = Field(default=30.0, gt=0, description="Open-loop requests per second (the reference's load "
                                                         "test: 30).")
    duration_s: float = Field(default=60.0, gt=0, description="Seconds of open-loop load (the reference: 60; a "
                                                               "few seconds are enough in CI).")
    max_throughput_requests: int = Field(default=1000, gt=0, description="Requests sent back to back to measure "
                                                                         "the maximum throughput.")
    threads: int = Field(default=1, gt=0, description="The model's threads while scoring (requests go one at a time, "
                                                      "each too small to gain from a second thread).")
    hold_restaurants: bool = Field(default=True, description="Hold the live store version's restaurant features in "
                                   "memory, as each API worker does, so a request reads only its user; false reads "
                                   "every request's restaurants from the store too.")


def _requests(path: Path) -> list[Request]:
    return [Request(r["user_id"], r["latitude"], r["longitude"], tuple(r["candidate_restaurant_ids"]),
                    int(r["size"]), float(r["max_dist"]), bool(r["sort_dist"]))
            for r in pq.read_table(path).to_pylist()]


@dg.asset(group_name="serving", kinds={"pytorch"},
          deps=[online_features, restaurant_geo_index, model_exports], pool="scoring_benchmark",
          owners=[OWNER], code_version="2", automation_condition=FOLLOWS_PARENTS,
          check_specs=[dg.AssetCheckSpec(LATENCY_CHECK, asset="scoring_benchmark",
                                         description=f"open-loop p95 ≤ {REFERENCE_P95_MS} ms")])
def scoring_benchmark(config: ScoringBenchmarkConfig, source: SourceResource, warehouse: WarehouseResource,
                      online_store: OnlineStoreResource) -> dg.MaterializeResult:
    """requests.parquet replayed through the recommender as an API worker serves them (the user's
    features read from the online store on every request, the live version's restaurant features
    held in memory unless `hold_restaurants` is false): open loop at `rate` for `duration_s`, then
    back to back at full speed."""
    layout = warehouse.layout()
    store = online_store.open()
    try:
        recommender = Recommender(GeoIndex.load(layout.geo_index), store, live_scorer(layout.export, config.threads))
        live = store.live() if config.hold_restaurants else None
        if live is not None:
            recommender.hold(store.restaurant_features(live.number))
        with tempfile.TemporaryDirectory(prefix="requests-") as scratch:
            requests = _requests(source.open().requests_file(Path(scratch)))
        for request in requests[:20]:  # warm-up
            recommender.recommend(request)
        answered_before, scored_before = recommender.answers, recommender.rows_scored
        steady_run = open_loop(recommender.recommend, requests, config.rate, config.duration_s)
        steady = steady_run.summary()
        peak = closed_loop(recommender.recommend, requests, config.max_throughput_requests).summary()
        answered = recommender.answers - answered_before
    finally:
        store.close()
    backend = online_store.describe()
    histogram = histogram_svg(steady_run.latencies_ms.tolist(), {"p50": steady["p50_ms"], "p95": steady["p95_ms"]},
                              f"Open-loop latency at {config.rate:g} rps, {backend}")
    candidates = len(requests[0].candidate_restaurant_ids or ()) if requests else 0
    return dg.MaterializeResult(metadata={
        **{f"open_loop_{k}": v for k, v in steady.items()}, **{f"max_throughput_{k}": v for k, v in peak.items()},
        "latency_histogram": picture(histogram, "latency histogram"), "backend": backend,
        "candidates_per_request": candidates, "served_format": recommender.scorer.format,
        "restaurants_held": recommender.held is not None,
        "rows_scored_per_request": (recommender.rows_scored - scored_before) / answered if answered else 0.0},
        check_results=[dg.AssetCheckResult(
        check_name=LATENCY_CHECK, passed=bool(steady["p95_ms"] <= REFERENCE_P95_MS and steady["errors"] == 0),
        metadata={"p95_ms": steady["p95_ms"], "errors": steady["errors"], "bar_ms": REFERENCE_P95_MS})])
