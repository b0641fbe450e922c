"""What a recommendation needs: the H3 restaurant index, the online features, and proof of speed."""

import tempfile
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow.parquet as pq
import torch

from pipeline.data.features import RESTAURANTS, USERS, load_snapshot
from pipeline.defs.assets.model import torchscript_model
from pipeline.defs.metadata import throughput
from pipeline.defs.resources import OnlineStoreResource, SourceResource, WarehouseResource
from pipeline.geo.index import GeoIndex
from pipeline.serving.loadgen import closed_loop, open_loop
from pipeline.serving.recommender import Recommender, Request
from pipeline.serving.scorer import TorchScriptScorer

LATENCY_CHECK = "p95_within_reference_bar"
REFERENCE_P95_MS = 100.0


@dg.asset(group_name="serving", kinds={"h3", "arrow"}, deps=["restaurant_features"])
def restaurant_geo_index(warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Restaurants (id, latitude, longitude, H3 cell int64 at resolution 8) sorted by cell, with a
    cell → rows lookup: exact distance filtering of candidate lists, and retrieval within a radius."""
    started = time.perf_counter()
    layout = warehouse.layout()
    restaurants = load_snapshot(layout.restaurant_features, RESTAURANTS)
    index = GeoIndex.build(restaurants.ids, restaurants.locations[:, 0], restaurants.locations[:, 1])
    size = index.save(layout.geo_index)
    per_cell = np.diff(np.r_[index.cell_starts, len(index.cells)])
    return dg.MaterializeResult(metadata={
        **throughput(len(index.ids), size, time.perf_counter() - started),
        "cells": len(index.unique_cells), "h3_resolution": index.resolution,
        "restaurants_per_cell_mean": float(per_cell.mean()) if len(per_cell) else 0.0,
        "restaurants_per_cell_max": int(per_cell.max()) if len(per_cell) else 0,
        "path": dg.MetadataValue.path(str(layout.geo_index))})


@dg.asset(group_name="serving", kinds={"sqlite", "redis"}, deps=["user_features", "restaurant_features"])
def online_features(warehouse: WarehouseResource, online_store: OnlineStoreResource) -> dg.MaterializeResult:
    """User and restaurant features in the online store (float32 bytes per entity), loaded in
    batches that overwrite in place, so readers never see a missing or half-written entry."""
    layout = warehouse.layout()
    store = online_store.open()
    metadata, total, size, started = {"backend": online_store.describe()}, 0, 0, time.perf_counter()
    try:
        for kind, path in ((USERS, layout.user_features), (RESTAURANTS, layout.restaurant_features)):
            snapshot = load_snapshot(path, kind)
            began = time.perf_counter()
            rows = store.load(kind.name, snapshot.ids, snapshot.values, snapshot.version)
            seconds = time.perf_counter() - began
            metadata |= {f"{kind.name}_rows": rows, f"{kind.name}_seconds": round(seconds, 3),
                         f"{kind.name}_rows_per_s": round(rows / seconds, 1) if seconds else 0.0,
                         f"{kind.name}_version": snapshot.version}
            total, size = total + rows, size + snapshot.values.nbytes  # float32 bytes stored
    finally:
        store.close()
    return dg.MaterializeResult(metadata={**metadata, **throughput(total, size, time.perf_counter() - started)})


class ScoringBenchmarkConfig(dg.Config):
    """How long and how hard to replay requests.parquet through the recommender."""

    rate: float = 30.0
    """Open-loop requests per second (the reference's load test: 30)."""
    duration_s: float = 60.0
    """Seconds of open-loop load (the reference: 60; a few seconds are enough in CI)."""
    max_throughput_requests: int = 1000
    """Requests sent back to back to measure the maximum throughput."""
    threads: int = 1
    """torch threads while scoring (one request at a time: 1 is fastest here)."""


def _requests(path: Path) -> list[Request]:
    return [Request(r["user_id"], r["latitude"], r["longitude"], tuple(r["candidate_restaurant_ids"]),
                    int(r["size"]), float(r["max_dist"]), bool(r["sort_dist"]))
            for r in pq.read_table(path).to_pylist()]


@dg.asset(group_name="serving", kinds={"pytorch"},
          deps=[online_features, restaurant_geo_index, torchscript_model],
          check_specs=[dg.AssetCheckSpec(LATENCY_CHECK, asset="scoring_benchmark",
                                         description=f"open-loop p95 ≤ {REFERENCE_P95_MS} ms")])
def scoring_benchmark(config: ScoringBenchmarkConfig, source: SourceResource, warehouse: WarehouseResource,
                      online_store: OnlineStoreResource) -> dg.MaterializeResult:
    """requests.parquet replayed through the recommender (features read from the online store on
    every request): open loop at `rate` for `duration_s`, then back to back at full speed."""
    torch.set_num_threads(config.threads)
    layout = warehouse.layout()
    store = online_store.open()
    try:
        recommender = Recommender(GeoIndex.load(layout.geo_index), store, TorchScriptScorer(layout.torchscript))
        with tempfile.TemporaryDirectory(prefix="requests-") as scratch:
            requests = _requests(source.open().requests_file(Path(scratch)))
        for request in requests[:20]:  # warm-up
            recommender.recommend(request)
        steady = open_loop(recommender.recommend, requests, config.rate, config.duration_s).summary()
        peak = closed_loop(recommender.recommend, requests, config.max_throughput_requests).summary()
    finally:
        store.close()
    metadata = {**{f"open_loop_{k}": v for k, v in steady.items()},
                **{f"max_throughput_{k}": v for k, v in peak.items()},
                "backend": online_store.describe(), "candidates_per_request":
                    len(requests[0].candidate_restaurant_ids) if requests else 0}
    return dg.MaterializeResult(metadata=metadata, check_results=[dg.AssetCheckResult(
        check_name=LATENCY_CHECK, passed=bool(steady["p95_ms"] <= REFERENCE_P95_MS and steady["errors"] == 0),
        metadata={"p95_ms": steady["p95_ms"], "errors": steady["errors"], "bar_ms": REFERENCE_P95_MS})])
