"""The code location as Dagster loads it: the definitions snapshot, partitions, automation conditions,
the sensor's observation, and the jobs executed as defined."""

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import dagster as dg
import pytest
import yaml

from pipeline.definitions import defs as load_defs
from pipeline.defs.jobs import IN_LOCATION, LOCATION_NAME
from pipeline.defs.partitions import click_days_definition
from pipeline.defs.sensors import feature_source_sensor

ROOT = Path(__file__).parents[1]
SNAPSHOT = Path(__file__).with_name("definitions_snapshot.json")
BIN = Path(sys.executable).parent


def _describe(defs: dg.Definitions) -> dict:
    """What a change to the graph changes: assets (deps, checks, automation, pools, partitions),
    jobs, schedules and sensors."""
    graph = defs.resolve_asset_graph()
    assets = {}
    for node in sorted(graph.asset_nodes, key=lambda n: n.key.to_user_string()):
        assets[node.key.to_user_string()] = {
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "checks": sorted(k.name for k in node.check_keys),
            "automation": node.automation_condition.get_label() if node.automation_condition else None,
            "pools": sorted(node.pools or ()), "partitioned": node.partitions_def is not None,
            "owners": list(node.owners), "code_version": node.code_version,
            "has_freshness_policy": node.freshness_policy is not None,
            "columns": [c.name for c in node.metadata["dagster/column_schema"].columns]
            if "dagster/column_schema" in node.metadata else None,
        }
    repo = defs.get_repository_def()
    return {
        "assets": assets,
        "jobs": {j.name: sorted(k.to_user_string() for k in (
            defs.resolve_job_def(j.name).asset_layer.executable_asset_keys))
            for j in sorted(repo.get_all_jobs(), key=lambda j: j.name) if not j.name.startswith("__")},
        "schedules": {s.name: s.cron_schedule for s in sorted(repo.schedule_defs, key=lambda s: s.name)},
        "sensors": sorted(s.name for s in repo.sensor_defs),
    }


def test_definitions_match_the_snapshot():
    """A change to the graph is deliberate: regenerate with UPDATE_DEFINITIONS_SNAPSHOT=1 and review."""
    described = _describe(load_defs())
    if os.environ.get("UPDATE_DEFINITIONS_SNAPSHOT"):
        SNAPSHOT.write_text(json.dumps(described, indent=2, sort_keys=True) + "\n")
    assert described == json.loads(SNAPSHOT.read_text())


def test_every_job_schedule_sensor_and_config_field_is_described():
    defs = load_defs()
    repo = defs.get_repository_def()
    for job in repo.get_all_jobs():
        if not job.name.startswith("__"):
            assert job.description, job.name
            assert job.run_tags == IN_LOCATION, job.name
    for definition in [*repo.schedule_defs, *repo.sensor_defs]:
        assert definition.description, definition.name
    for name, resource in defs.resources.items():
        for field, info in type(resource).model_fields.items():
            assert info.description, f"resource {name}.{field}"
    for node in defs.resolve_asset_graph().asset_nodes:
        assert node.description, node.key


def test_code_location_is_named_pipeline_everywhere():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["dg"]["project"]["code_location_name"] == LOCATION_NAME == "pipeline"
    assert pyproject["tool"]["dagster"]["code_location_name"] == LOCATION_NAME
    assert IN_LOCATION == {".dagster/repository": "__repository__@pipeline"}
    [entry] = yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"]
    assert entry == {"python_module": {"module_name": "pipeline.definitions", "location_name": LOCATION_NAME,
                                       "working_directory": "."}}


LOCATIONS_QUERY = ('{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus locationOrLoadError '
                   '{ __typename ... on PythonError { message } } } } } }')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _locations(port: int) -> list[dict] | None:
    """The webserver's code locations, or None while it is not answering yet."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", method="POST",
                                     data=json.dumps({"query": LOCATIONS_QUERY}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())["data"]["workspaceOrError"]["locationEntries"]
    except OSError:
        return None


@pytest.mark.slow
def test_dagster_dev_with_the_workspace_file_and_dg_dev_both_serve_the_location(tmp_path):
    """``dagster dev -w workspace.yaml`` and ``dg dev`` (which reads [tool.dg]), started side by side
    from the repository root, each serve the one code location ``pipeline``, loaded without error.
    Their instance cannot launch a run and their source is empty, so the daemon's sensors do nothing."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("run_queue:\n  max_concurrent_runs: 0\ntelemetry:\n  enabled: false\n")
    env = {**os.environ, "DAGSTER_HOME": str(home), "VIRTUAL_ENV": str(BIN.parent),
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PIPELINE_DATASET_DIR": str(tmp_path / "no_dataset"),
           "PIPELINE_WAREHOUSE_DIR": str(tmp_path / "warehouse")}
    commands = {"dagster dev -w workspace.yaml": [str(BIN / "dagster"), "dev", "-w", "workspace.yaml"],
                "dg dev": [str(BIN / "dg"), "dev"]}
    servers = {}
    try:
        for name, command in commands.items():
            port = _free_port()
            log = open(tmp_path / f"{name.split()[0]}.log", "wb")
            servers[name] = (port, log, subprocess.Popen(
                [*command, "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT, env=env, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True))
        deadline, loaded = time.monotonic() + 180, {}
        while len(loaded) < len(servers) and time.monotonic() < deadline:
            for name, (port, log, process) in servers.items():
                assert process.poll() is None, f"{name} exited: {Path(log.name).read_text(errors='replace')[-3000:]}"
                entries = _locations(port)
                if name not in loaded and entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    loaded[name] = entries
            time.sleep(0.5)
        expected = [{"name": "pipeline", "loadStatus": "LOADED",
                     "locationOrLoadError": {"__typename": "RepositoryLocation"}}]
        assert loaded == dict.fromkeys(commands, expected)
    finally:
        _stop_groups([process for _, _, process in servers.values()])
        for _, log, _ in servers.values():
            log.close()


def _stop_groups(processes: list[subprocess.Popen], grace: float = 5.0) -> None:
    """Interrupt each server's process group as Ctrl-C would, then kill whatever is left of them."""
    for signum in (signal.SIGINT, signal.SIGKILL):
        for process in processes:
            try:
                os.killpg(process.pid, signum)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        for process in processes:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass


def test_partitions_end_on_the_datasets_last_day(tiny_dataset, tmp_path):
    derived = click_days_definition("2026-01-01", "", str(tiny_dataset.root))
    assert derived.get_partition_keys() == tiny_dataset.days() == ["2026-01-01", "2026-01-02", "2026-01-03"]
    fixed = click_days_definition("2026-01-01", "2026-01-05", str(tiny_dataset.root))
    assert fixed.get_partition_keys()[-1] == "2026-01-05"
    now = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
    assert click_days_definition("2026-01-01", "open", "").get_partition_keys(current_time=now)[-1] == "2026-02-28"
    assert click_days_definition("2026-01-01", "", str(tmp_path / "nothing")).get_partition_keys() == ["2026-01-01"]
    bigquery = click_days_definition("2026-01-01", "", str(tiny_dataset.root), "bigquery")  # never queried to load
    assert bigquery.get_partition_keys(current_time=now)[-1] == "2026-02-28"
    with pytest.raises(ValueError, match="PIPELINE_END_DATE=2025-12-31 is before"):
        click_days_definition("2026-01-01", "2025-12-31", "")


def _materialized(instance, asset: str, partition: str | None = None, checks: dict[str, bool] | None = None):
    instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition=partition))
    for name, passed in (checks or {}).items():
        instance.report_runless_asset_event(dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey(asset), check_name=name, passed=passed, partition=partition))


class _Automation:
    """Evaluates the location's automation conditions tick after tick, as the daemon does, starting
    with both feature snapshots materialized and a first tick at ``start``."""

    def __init__(self, instance, start: dt.datetime):
        self.defs, self.instance, self.cursor = load_defs(), instance, None
        for asset in ("user_features", "restaurant_features"):
            _materialized(instance, asset)
        self.requested(start)

    def requested(self, at: dt.datetime) -> dict[str, set]:
        result = dg.evaluate_automation_conditions(  # a selection of our own: the default one warns (Beta)
            defs=self.defs, instance=self.instance, cursor=self.cursor, evaluation_time=at,
            asset_selection=dg.AssetSelection.all() | dg.AssetSelection.all_asset_checks())
        self.cursor = result.cursor
        requested = {}
        for r in result.results:
            if r.true_subset.size:
                key = r.key.to_user_string() if isinstance(r.key, dg.AssetKey) else None
                if key:
                    requested[key] = (set(r.true_subset.expensively_compute_partition_keys())
                                      if r.true_subset.is_partitioned else {None})
        return requested


PROCESSED_CHECKS = {"raw_rows_reconcile": True, "chunks_match_manifest": True}
DAY1 = dt.datetime(2026, 1, 20, 1, 30, tzinfo=dt.UTC)


def test_processed_days_follow_raw_days_not_feature_refreshes():
    with dg.instance_for_test() as instance:
        auto = _Automation(instance, DAY1)
        _materialized(instance, "raw_clicks", "2026-01-05")  # a backfilled day, not the latest
        assert auto.requested(DAY1 + dt.timedelta(seconds=30)) == {"processed_clicks": {"2026-01-05"}}
        _materialized(instance, "processed_clicks", "2026-01-05", PROCESSED_CHECKS)
        _materialized(instance, "user_features")  # a feature refresh: the geo index etc. follow, not history
        requested = auto.requested(DAY1 + dt.timedelta(seconds=60))
        assert "processed_clicks" not in requested


def test_training_runs_on_the_cron_only_after_new_checked_days():
    with dg.instance_for_test() as instance:
        auto = _Automation(instance, DAY1)
        _materialized(instance, "processed_clicks", "2026-01-19", PROCESSED_CHECKS)
        before = auto.requested(DAY1 + dt.timedelta(minutes=30))  # 02:00: a new day, no cron tick yet
        assert "click_model" not in before
        at_three = auto.requested(DAY1 + dt.timedelta(hours=1, minutes=31))  # 03:01
        # the step that trains and evaluates, and the export in the same run
        assert {k: at_three.get(k) for k in ("click_model", "model_evaluation", "model_exports")} == {
            "click_model": {None}, "model_evaluation": {None}, "model_exports": {None}}
        for asset in ("click_model", "model_evaluation", "model_exports"):
            _materialized(instance, asset)
        assert "click_model" not in auto.requested(DAY1 + dt.timedelta(hours=1, minutes=32))

        next_day = DAY1 + dt.timedelta(days=1, hours=1, minutes=31)  # 03:01 the next day, no new day
        auto.requested(next_day - dt.timedelta(hours=1))
        assert "click_model" not in auto.requested(next_day)

        # a new day whose blocking check failed does not train
        _materialized(instance, "processed_clicks", "2026-01-20",
                      {"raw_rows_reconcile": False, "chunks_match_manifest": True})
        third = DAY1 + dt.timedelta(days=2, hours=1, minutes=31)
        auto.requested(third - dt.timedelta(hours=1))
        assert "click_model" not in auto.requested(third)


def test_sensor_observes_the_source_and_does_not_repeat_a_refresh_already_done(dataset_copy, tmp_path):
    from pipeline.defs.resources import LocalParquetSourceResource, WarehouseResource

    source = LocalParquetSourceResource(dataset_dir=str(dataset_copy.root), start_date="2026-01-01")
    with dg.instance_for_test() as instance:
        from pipeline.defs.assets.features import restaurant_features, user_features

        assert dg.materialize([user_features, restaurant_features], instance=instance, resources={
            "source": source, "warehouse": WarehouseResource(root=str(tmp_path / "wh"))}).success
        tick = feature_source_sensor.evaluate_tick(dg.build_sensor_context(instance=instance, resources={
            "source": source}))
        assert tick.run_requests == [] and "already made from" in tick.skip_message
        assert tick.cursor == source.feature_version()
        [observation] = tick.asset_events
        assert observation.asset_key == dg.AssetKey("feature_tables")
        assert observation.tags["dagster/data_version"] == source.feature_version()


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
