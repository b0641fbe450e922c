"""The jobs and the daily schedule: each job executes as defined, and the schedule asks for yesterday
only when the source has it."""

import datetime as dt

import dagster as dg
import pytest

from pipeline.definitions import defs as load_defs
from pipeline.defs.jobs import daily_clicks_schedule
from pipeline.defs.resources import LocalParquetSourceResource


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


@pytest.mark.slow
def test_jobs_execute_as_defined(dataset_copy, tmp_path, monkeypatch):
    """Each job of the location, resolved from the definitions with their own resources (set by the
    environment), executed in order: snapshots, a ranged ingest, training, the refresh."""
    for name, value in {"PIPELINE_DATASET_DIR": dataset_copy.root, "PIPELINE_WAREHOUSE_DIR": tmp_path / "wh",
                        "PIPELINE_SQLITE_PATH": tmp_path / "online.db", "PIPELINE_ONLINE_STORE": "sqlite"}.items():
        monkeypatch.setenv(name, str(value))
    defs = load_defs()
    quick = {"ops": {"scoring_benchmark": {"config": {"duration_s": 1.0, "max_throughput_requests": 50}}}}
    with dg.instance_for_test() as instance:
        def run(job: str, **kwargs):
            result = defs.resolve_job_def(job).execute_in_process(instance=instance, **kwargs)
            assert result.success, job
            return result

        run("feature_snapshots")
        run("ingest_clicks", tags={"dagster/asset_partition_range_start": "2026-01-01",
                                   "dagster/asset_partition_range_end": "2026-01-03"})
        trained = run("train_model")
        run("refresh_features", run_config=quick)
        assert instance.get_materialized_partitions(dg.AssetKey("processed_clicks")) == set(dataset_copy.days())
        observed = [e.event_specific_data.asset_observation.metadata["trained_day"].value for e in trained.all_events
                    if e.event_type_value == "ASSET_OBSERVATION"]
        assert observed == dataset_copy.days()  # one point per trained day on the learning curve
        runs = instance.get_runs()
        assert len(runs) == 4 and all(r.tags[".dagster/repository"] == "__repository__@pipeline" for r in runs)
