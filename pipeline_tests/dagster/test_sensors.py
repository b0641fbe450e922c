"""The feature-refresh sensor: one run per new feature version, none while the source is missing, and
none for a refresh already made (it observes the source)."""

import os

import dagster as dg

from pipeline.defs.assets.features import restaurant_features, user_features
from pipeline.defs.resources import LocalParquetSourceResource, WarehouseResource
from pipeline.defs.sensors import feature_source_sensor


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


def test_sensor_observes_the_source_and_does_not_repeat_a_refresh_already_done(dataset_copy, tmp_path):
    source = LocalParquetSourceResource(dataset_dir=str(dataset_copy.root), start_date="2026-01-01")
    with dg.instance_for_test() as instance:
        assert dg.materialize([user_features, restaurant_features], instance=instance, resources={
            "source": source, "warehouse": WarehouseResource(root=str(tmp_path / "wh"))}).success
        tick = feature_source_sensor.evaluate_tick(dg.build_sensor_context(instance=instance, resources={
            "source": source}))
        assert tick.run_requests == [] and "already made from" in tick.skip_message
        assert tick.cursor == source.feature_version()
        [observation] = tick.asset_events
        assert observation.asset_key == dg.AssetKey("feature_tables")
        assert observation.tags["dagster/data_version"] == source.feature_version()
