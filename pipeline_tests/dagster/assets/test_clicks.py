"""The click assets on a test instance: a day end to end with its checks and metadata, bad rows, empty
and missing shards, concurrent ingests of one day, bad run config, and the backfill policy."""

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from pipeline.data.processed_partition import iter_chunks, read_manifest
from pipeline.defs.assets.clicks import processed_clicks, raw_clicks
from pipeline.defs.assets.features import restaurant_features, user_features
from pipeline.defs.assets.model import click_model
from pipeline.publish import Artifact
from pipeline.settings import SettingsError, load_settings
from pipeline_devtools.dagster_runs import local_resources, materialization_metadata, step_failures
from pipeline_devtools.datasets import write_clicks

ALL = [user_features, restaurant_features, raw_clicks, processed_clicks]


def test_one_day_end_to_end_with_metadata(tiny_dataset, tmp_path):
    resources = local_resources(tiny_dataset, tmp_path / "warehouse")
    with dg.instance_for_test() as instance:
        result = dg.materialize(ALL, partition_key="2026-01-02", resources=resources, instance=instance)
        assert result.success
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert checks == {"user_features_are_finite": True, "restaurant_features_are_finite": True,
                          "restaurant_features_locations_valid": True, "user_features_not_shrunk": True,
                          "restaurant_features_not_shrunk": True, "raw_files_readable": True,
                          "raw_rows_reconcile": True, "chunks_match_manifest": True}
        meta = materialization_metadata(instance, "processed_clicks", "2026-01-02")
        assert meta["rows"] == meta["raw_rows"] == 4_000 and meta["dropped_rows"] == 0
        assert meta["bytes"] > 0 and meta["rows_per_s"] > 0 and isinstance(meta["seconds"], float)
        assert materialization_metadata(instance, "user_features")["rows"] == 5_000
        assert materialization_metadata(instance, "raw_clicks", "2026-01-02")["rows"] == 4_000
    manifest = read_manifest(tmp_path / "warehouse/processed_clicks/date=2026-01-02")
    assert manifest["rows"] == 4_000 and manifest["users_ids_version"]


def test_bad_rows_in_a_shard_are_dropped_counted_and_reconciled(dataset_copy, tmp_path):
    write_clicks(dataset_copy.root / "train/train_00.parquet",
                 {"user_id": [1, 2, 10**9, 3, None], "restaurant_id": [1, 1, 1, 99_999, 2],
                  "click": [1, 1, 0, 1, 0]},
                 pa.schema([("user_id", pa.int64()), ("restaurant_id", pa.int64()), ("click", pa.int64())]))
    resources = local_resources(dataset_copy, tmp_path / "warehouse")
    with dg.instance_for_test() as instance:
        assert dg.materialize(ALL, partition_key="2026-01-01", resources=resources,
                              instance=instance).success
        meta = materialization_metadata(instance, "processed_clicks", "2026-01-01")
    assert (meta["raw_rows"], meta["rows"], meta["dropped_rows"]) == (5, 2, 3)
    assert (meta["dropped_unknown_user"], meta["dropped_unknown_restaurant"], meta["dropped_null"]) == (1, 1, 1)


def test_empty_partition_materializes_with_zero_rows(dataset_copy, tmp_path):
    write_clicks(dataset_copy.root / "train/train_01.parquet",
                 {"user_id": [], "restaurant_id": [], "click": []},
                 pa.schema([("user_id", pa.int64()), ("restaurant_id", pa.int64()), ("click", pa.int64())]))
    with dg.instance_for_test() as instance:
        assert dg.materialize(ALL, partition_key="2026-01-02",
                              resources=local_resources(dataset_copy, tmp_path / "warehouse"),
                              instance=instance).success
        assert materialization_metadata(instance, "processed_clicks", "2026-01-02")["rows"] == 0
    assert list(iter_chunks(tmp_path / "warehouse/processed_clicks/date=2026-01-02")) == []


def test_two_ingests_of_the_same_day_at_once_both_succeed_like_one(tiny_dataset, tmp_path):
    """Both runs succeed with the data of one; the raw day is extracted once (the second run waits
    for the first's lock and keeps its extract), the processed day published by each."""
    script = Path(__file__).parents[2] / "scripts" / "ingest_day.py"
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
    resources = local_resources(dataset_copy, tmp_path / "warehouse")
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
    resources = local_resources(tiny_dataset, tmp_path / "warehouse")
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
