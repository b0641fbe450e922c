"""The serving assets on a test instance with real stores: index, online features and the benchmark."""

import dagster as dg
import pytest

from pipeline.defs.assets.features import restaurant_features, user_features
from pipeline.defs.assets.serving import online_features, restaurant_geo_index, scoring_benchmark
from pipeline.defs.resources import LocalParquetSourceResource, OnlineStoreResource, WarehouseResource
from pipeline_devtools.published_copies import copy_artifact
from pipeline_devtools.warehouse_build import build_warehouse

REFRESH = [user_features, restaurant_features, restaurant_geo_index, online_features, scoring_benchmark]


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_refresh_builds_index_loads_store_and_benchmarks(backend, request, dataset_copy, serving_artifacts, tmp_path):
    warehouse = build_warehouse(dataset_copy, tmp_path / "wh", chunk_rows=4000, days=0)
    copy_artifact(serving_artifacts[0].export, warehouse.export)
    redis_url = request.getfixturevalue("redis_url") if backend == "redis" else ""
    resources = {
        "source": LocalParquetSourceResource(dataset_dir=str(dataset_copy.root), start_date="2026-01-01"),
        "warehouse": WarehouseResource(root=str(warehouse.root)),
        "online_store": OnlineStoreResource(backend=backend, redis_url=redis_url,
                                            sqlite_path=str(tmp_path / "online.db")),
    }
    run_config = {"ops": {"scoring_benchmark": {"config": {"duration_s": 1.0, "max_throughput_requests": 50}}}}
    with dg.instance_for_test() as instance:
        result = dg.materialize(REFRESH, resources=resources, run_config=run_config, instance=instance)
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["p95_within_reference_bar"]
    metadata = {e.asset_key.to_user_string(): {k: v.value for k, v in e.materialization.metadata.items()}
                for e in result.get_asset_materialization_events()}
    assert metadata["online_features"]["users_rows"] == 5_000 and metadata["online_features"]["backend"] == backend
    assert metadata["restaurant_geo_index"]["rows"] == 2_000 and metadata["restaurant_geo_index"]["h3_resolution"] == 8
    bench = metadata["scoring_benchmark"]
    assert bench["open_loop_requests"] == 30 and bench["open_loop_errors"] == 0
    assert 0 < bench["open_loop_p50_ms"] <= bench["open_loop_p95_ms"] <= bench["open_loop_max_ms"]
    assert bench["max_throughput_requests"] == 50 and bench["max_throughput_achieved_rps"] > 30
    # what was served and what each request cost: the format, the rows it scored, this process's CPU
    assert bench["served_format"] in ("onnx", "torchscript", "exported_program")
    assert 0 < bench["rows_scored_per_request"] <= bench["candidates_per_request"]
    assert 0 < bench["max_throughput_cpu_ms_per_request"] < 1000 / 30
    assert bench["candidates_per_request"] == 1000
    assert bench["restaurants_held"] is True  # as an API worker serves: the live restaurant features in memory
    if backend == "redis":  # the store really is the Redis server
        store = resources["online_store"].open()
        assert store.live().users_version == metadata["online_features"]["users_version"]
        store.close()
