"""The serving assets and the feature-refresh sensor on a test instance, with real stores."""

import os

import dagster as dg
import pytest

from pipeline.defs.assets.features import restaurant_features, user_features
from pipeline.defs.assets.serving import online_features, restaurant_geo_index, scoring_benchmark
from pipeline.defs.resources import LocalParquetSourceResource, OnlineStoreResource, WarehouseResource
from pipeline.defs.sensors import feature_source_sensor
from pipeline_tests.conftest import build_warehouse, copy_artifact

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
    if backend == "redis":  # the store really is the Redis server
        store = resources["online_store"].open()
        assert store.live().users_version == metadata["online_features"]["users_version"]
        store.close()


def _tick(source, instance, cursor=None):
    with dg.build_sensor_context(cursor=cursor, instance=instance, resources={"source": source}) as context:
        return feature_source_sensor.evaluate_tick(context)


def test_sensor_requests_one_run_per_new_feature_version(dataset_copy):
    source = LocalParquetSourceResource(dataset_dir=str(dataset_copy.root), start_date="2026-01-01")
    with dg.instance_for_test() as instance:
        first = _tick(source, instance)
        [request] = first.run_requests
        assert request.run_key.startswith("features-") and first.cursor
        unchanged = _tick(source, instance, first.cursor)
        assert unchanged.run_requests == [] and "unchanged" in unchanged.skip_message

        # a new version lands (atomic replace) → exactly one new run key
        path = dataset_copy.user_features
        data = path.read_bytes()
        path.unlink()
        path.write_bytes(data)
        second = _tick(source, instance, first.cursor)
        [request2] = second.run_requests
        assert request2.run_key != request.run_key and second.cursor != first.cursor

        # a file landing late, with an mtime older than anything seen: still a new version
        stat = path.stat()
        tmp = path.with_name("late.parquet")
        tmp.write_bytes(data)
        os.utime(tmp, ns=(stat.st_atime_ns - 10**12, stat.st_mtime_ns - 10**12))
        os.replace(tmp, path)
        late = _tick(source, instance, second.cursor)
        assert len(late.run_requests) == 1 and late.run_requests[0].run_key not in {request.run_key,
                                                                                    request2.run_key}
        # evaluating again from the same cursor asks for the same run key, which Dagster dedupes
        assert _tick(source, instance, second.cursor).run_requests[0].run_key == late.run_requests[0].run_key


def test_sensor_skips_while_the_source_is_missing(tmp_path):
    source = LocalParquetSourceResource(dataset_dir=str(tmp_path / "nothing"), start_date="2026-01-01")
    with dg.instance_for_test() as instance:
        result = _tick(source, instance)
    assert result.run_requests == [] and "not available" in result.skip_message
