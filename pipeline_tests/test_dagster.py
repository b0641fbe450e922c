"""The Dagster layer on a test instance: assets, checks, metadata, schedule, executor setting."""

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml

from pipeline.data.features import USERS, load_snapshot
from pipeline.data.processed_partition import iter_chunks, read_manifest
from pipeline.definitions import defs as load_defs
from pipeline.defs.assets.clicks import processed_clicks, raw_clicks
from pipeline.defs.assets.features import restaurant_features, user_features
from pipeline.defs.assets.model import click_model
from pipeline.defs.executor import executor_from_settings
from pipeline.defs.jobs import daily_clicks_schedule
from pipeline.defs.resources import LocalParquetSourceResource, WarehouseResource
from pipeline.publish import Artifact
from pipeline.settings import SettingsError, load_settings
from pipeline_tests.conftest import step_failures, write_clicks

ALL = [user_features, restaurant_features, raw_clicks, processed_clicks]
defs = load_defs()


def _resources(dataset, tmp_path):
    return {"source": LocalParquetSourceResource(dataset_dir=str(dataset.root), start_date="2026-01-01"),
            "warehouse": WarehouseResource(root=str(tmp_path / "warehouse"))}


def _metadata(instance, asset, partition=None):
    records = instance.fetch_materializations(dg.AssetKey(asset), limit=50).records
    for record in records:
        if record.asset_materialization.partition == partition:
            return {k: v.value for k, v in record.asset_materialization.metadata.items()}
    return None


def test_definitions_load_with_jobs_schedule_and_checks():
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == {
        "feature_tables", "user_features", "restaurant_features", "raw_clicks", "processed_clicks",
        "click_model", "model_evaluation", "model_exports",
        "restaurant_geo_index", "online_features", "scoring_benchmark"}
    for job in ("ingest_clicks", "feature_snapshots", "train_model", "refresh_features"):
        assert defs.resolve_job_def(job).name == job
    assert defs.resolve_sensor_def("feature_source_sensor").job_name == "refresh_features"
    assert defs.resolve_schedule_def("daily_clicks_schedule").cron_schedule == "0 1 * * *"
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey("click_model")).automation_condition.get_label().startswith("at 0 3 * * * UTC")


def test_single_writer_assets_are_in_pools_limited_to_one_step():
    pools = {node.key.to_user_string(): node.pools for node in defs.resolve_asset_graph().asset_nodes}
    assert {k: v for k, v in pools.items() if v} == {
        "user_features": {"user_features"}, "restaurant_features": {"restaurant_features"},
        "click_model": {"click_model_checkpoint"}, "model_evaluation": {"click_model_checkpoint"},
        "model_exports": {"model_export"}, "restaurant_geo_index": {"geo_index"},
        "online_features": {"online_store"}, "scoring_benchmark": {"scoring_benchmark"}}
    # the partitioned click assets rely on the per-day lock instead: a pool would serialize all days
    assert pools["raw_clicks"] == pools["processed_clicks"] == set()
    instance_yaml = yaml.safe_load((Path(__file__).parents[1] / "deploy/dagster.yaml").read_text())
    assert instance_yaml["concurrency"]["pools"] == {"default_limit": 1}


def test_one_day_end_to_end_with_metadata(tiny_dataset, tmp_path):
    resources = _resources(tiny_dataset, tmp_path)
    with dg.instance_for_test() as instance:
        result = dg.materialize(ALL, partition_key="2026-01-02", resources=resources, instance=instance)
        assert result.success
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert checks == {"user_features_are_finite": True, "restaurant_features_are_finite": True,
                          "restaurant_features_locations_valid": True, "user_features_not_shrunk": True,
                          "restaurant_features_not_shrunk": True, "raw_files_readable": True,
                          "raw_rows_reconcile": True, "chunks_match_manifest": True}
        meta = _metadata(instance, "processed_clicks", "2026-01-02")
        assert meta["rows"] == meta["raw_rows"] == 4_000 and meta["dropped_rows"] == 0
        assert meta["bytes"] > 0 and meta["rows_per_s"] > 0 and isinstance(meta["seconds"], float)
        assert _metadata(instance, "user_features")["rows"] == 5_000
        assert _metadata(instance, "raw_clicks", "2026-01-02")["rows"] == 4_000
    manifest = read_manifest(tmp_path / "warehouse/processed_clicks/date=2026-01-02")
    assert manifest["rows"] == 4_000 and manifest["users_ids_version"]


def test_bad_rows_in_a_shard_are_dropped_counted_and_reconciled(dataset_copy, tmp_path):
    write_clicks(dataset_copy.root / "train/train_00.parquet",
                 {"user_id": [1, 2, 10**9, 3, None], "restaurant_id": [1, 1, 1, 99_999, 2],
                  "click": [1, 1, 0, 1, 0]},
                 pa.schema([("user_id", pa.int64()), ("restaurant_id", pa.int64()), ("click", pa.int64())]))
    resources = _resources(dataset_copy, tmp_path)
    with dg.instance_for_test() as instance:
        assert dg.materialize(ALL, partition_key="2026-01-01", resources=resources,
                              instance=instance).success
        meta = _metadata(instance, "processed_clicks", "2026-01-01")
    assert (meta["raw_rows"], meta["rows"], meta["dropped_rows"]) == (5, 2, 3)
    assert (meta["dropped_unknown_user"], meta["dropped_unknown_restaurant"], meta["dropped_null"]) == (1, 1, 1)


def test_empty_partition_materializes_with_zero_rows(dataset_copy, tmp_path):
    write_clicks(dataset_copy.root / "train/train_01.parquet",
                 {"user_id": [], "restaurant_id": [], "click": []},
                 pa.schema([("user_id", pa.int64()), ("restaurant_id", pa.int64()), ("click", pa.int64())]))
    with dg.instance_for_test() as instance:
        assert dg.materialize(ALL, partition_key="2026-01-02", resources=_resources(dataset_copy, tmp_path),
                              instance=instance).success
        assert _metadata(instance, "processed_clicks", "2026-01-02")["rows"] == 0
    assert list(iter_chunks(tmp_path / "warehouse/processed_clicks/date=2026-01-02")) == []


def test_nan_features_are_rejected_and_the_good_snapshot_stays_live(dataset_copy, tmp_path):
    resources = _resources(dataset_copy, tmp_path)
    with dg.instance_for_test() as instance:
        assert dg.materialize(ALL[:2], resources=resources, instance=instance).success
        good = load_snapshot(tmp_path / "warehouse/features/users", USERS)
        frame = pd.read_parquet(dataset_copy.user_features)
        frame.loc[7, "f12"] = np.nan
        frame.loc[8, "f00"] = np.inf
        dataset_copy.user_features.unlink()
        frame.to_parquet(dataset_copy.user_features)
        result = dg.materialize(ALL, partition_key="2026-01-01", resources=resources, instance=instance,
                                raise_on_error=False)
        assert not result.success
        evaluation = {e.check_name: e for e in result.get_asset_check_evaluations()}
        check = evaluation["user_features_are_finite"]
        assert not check.passed and check.metadata["non_finite_values"].value == 2
        assert check.metadata["columns_with_non_finite"].value == {"f00": 1, "f12": 1}
        assert "rejected candidate" in step_failures(result)
        assert "user_id 7, f12 = nan" in step_failures(result)
        assert _metadata(instance, "processed_clicks", "2026-01-01") is None
    assert not (tmp_path / "warehouse/processed_clicks/date=2026-01-01").exists()
    live = load_snapshot(tmp_path / "warehouse/features/users", USERS)  # the good one, still in use
    assert live.version == good.version and np.isfinite(live.values).all()


def test_two_ingests_of_the_same_day_at_once_both_succeed_like_one(tiny_dataset, tmp_path):
    """Both runs succeed with the data of one; the raw day is extracted once (the second run waits
    for the first's lock and keeps its extract), the processed day published by each."""
    script = Path(__file__).parent / "scripts" / "ingest_day.py"
    single, shared = tmp_path / "single", tmp_path / "shared"

    def start(warehouse):
        return subprocess.Popen([sys.executable, str(script), str(tiny_dataset.root), str(warehouse), "2026-01-02"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    for process in [start(single)]:
        assert process.wait(timeout=300) == 0, process.stderr.read()[-3000:]
    processes = [start(shared), start(shared)]
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]
        assert json.loads(out.splitlines()[-1])["success"]
    day = "date=2026-01-02"
    for asset in ("raw_clicks", "processed_clicks"):
        ours, theirs = Artifact(shared / asset / day), Artifact(single / asset / day)
        data = [{k: v for k, v in a.record()["files"].items() if k != "_manifest.json"} for a in (ours, theirs)]
        assert data[0] == data[1] and data[0]  # the same data files, sizes and crc32s
        # raw: one extract, kept by the other run; processed: each run published a complete version
        assert len(ours.versions()) == (1 if asset == "raw_clicks" else 2)
        assert not list((shared / asset).glob(".*.versions/.staging-*"))
    manifests = [read_manifest(root / "processed_clicks" / day) for root in (shared, single)]
    assert [{k: m[k] for k in ("rows", "dropped", "duplicates", "chunks")} for m in manifests] == [
        {k: manifests[1][k] for k in ("rows", "dropped", "duplicates", "chunks")}] * 2


def test_missing_shard_and_bad_schema_fail_with_clear_messages(dataset_copy, tmp_path):
    resources = _resources(dataset_copy, tmp_path)
    with dg.instance_for_test() as instance:
        assert dg.materialize([user_features, restaurant_features], resources=resources, instance=instance).success
        with pytest.raises(Exception, match=r"no click shard for day 2026-01-09: expected .*train_08\.parquet"):
            dg.materialize([raw_clicks], partition_key="2026-01-09", resources=resources, instance=instance)
        write_clicks(dataset_copy.root / "train/train_02.parquet",
                     {"user_id": [1], "restaurant_id": [1], "clicked": [1]})
        with pytest.raises(Exception, match=r"train_02\.parquet: missing column 'click'"):
            dg.materialize([raw_clicks], partition_key="2026-01-03", resources=resources, instance=instance)
    assert Artifact(tmp_path / "warehouse/raw_clicks/date=2026-01-03").live_version() is None
    assert not list((tmp_path / "warehouse/raw_clicks").glob(".*.versions/*"))  # no candidate left either


def test_bad_run_config_is_refused_before_any_work(tiny_dataset, tmp_path):
    resources = _resources(tiny_dataset, tmp_path)
    with dg.instance_for_test() as instance:
        result = dg.materialize([raw_clicks, processed_clicks], partition_key="2026-01-01", resources=resources,
                                instance=instance, raise_on_error=False,
                                run_config={"ops": {"processed_clicks": {"config": {"chunk_rows": 0}}}})
        assert not result.success and "chunk_rows" in step_failures(result)
        assert "greater than 0" in step_failures(result)
        assert Artifact(tmp_path / "warehouse/processed_clicks/date=2026-01-01").live_version() is None
        with pytest.raises(dg.DagsterInvalidConfigError, match="fulll"):
            dg.materialize([click_model], resources=resources,
                           instance=instance, run_config={"ops": {"click_model": {"config": {"mode": "fulll"}}}})


def test_daily_schedule_requests_yesterday_only_when_the_source_has_it(tiny_dataset):
    source = LocalParquetSourceResource(dataset_dir=str(tiny_dataset.root), start_date="2026-01-01")
    at = dt.datetime(2026, 1, 3, 1, tzinfo=dt.UTC)
    with dg.build_schedule_context(scheduled_execution_time=at, resources={"source": source}) as context:
        request = daily_clicks_schedule(context)
    assert isinstance(request, dg.RunRequest) and request.partition_key == "2026-01-02"
    later = dt.datetime(2026, 2, 1, 1, tzinfo=dt.UTC)
    with dg.build_schedule_context(scheduled_execution_time=later, resources={"source": source}) as context:
        skip = daily_clicks_schedule(context)
    assert isinstance(skip, dg.SkipReason) and "2026-01-31" in skip.skip_message


def test_executor_is_chosen_by_configuration(monkeypatch):
    monkeypatch.setenv("PIPELINE_EXECUTOR", "in_process")
    assert executor_from_settings(load_settings()) is dg.in_process_executor
    monkeypatch.setenv("PIPELINE_EXECUTOR", "multiprocess")
    monkeypatch.setenv("PIPELINE_MAX_CONCURRENT", "3")
    assert executor_from_settings(load_settings()).name == "multiprocess"
    for kind in ("celery", "k8s"):  # the extras are in the lock (test_celery.py, test_deploy.py run them)
        monkeypatch.setenv("PIPELINE_EXECUTOR", kind)
        assert executor_from_settings(load_settings()).name == kind
    from pipeline.defs.executor import _import_optional

    with pytest.raises(ImportError, match=r"needs the project's 'celery' extra \(pip install -e '\.\[celery\]'"):
        _import_optional("dagster_celery_missing", "celery_executor", "celery")
    monkeypatch.setenv("PIPELINE_EXECUTOR", "threads")
    with pytest.raises(SettingsError, match="PIPELINE_EXECUTOR: expected one of multiprocess, in_process, celery, "
                                            "k8s, got 'threads'"):
        load_settings()


def test_backfill_days_per_run_setting_chooses_one_run_or_runs_of_n_days():
    from pipeline.defs.assets.clicks import backfill_policy

    assert backfill_policy(0).max_partitions_per_run is None  # one run, however long
    assert backfill_policy(8).max_partitions_per_run == 8
    with pytest.raises(ValueError, match="PIPELINE_BACKFILL_DAYS_PER_RUN"):
        backfill_policy(-1)
    assert load_settings({"PIPELINE_BACKFILL_DAYS_PER_RUN": "8"}).dagster.backfill_days_per_run == 8
    assert load_settings({"PIPELINE_BACKFILL_DAYS_PER_RUN": ""}).dagster.backfill_days_per_run == 0  # the default
    for bad in ("-1", "eight"):
        with pytest.raises(SettingsError, match="PIPELINE_BACKFILL_DAYS_PER_RUN: expected 0"):
            load_settings({"PIPELINE_BACKFILL_DAYS_PER_RUN": bad})
