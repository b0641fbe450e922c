"""The code location as Dagster loads it: the definitions and their snapshot, every part described, the
location's name, and single-writer pools."""

import json
import os
import tomllib
from pathlib import Path

import dagster as dg
import yaml

from pipeline.definitions import defs as load_defs
from pipeline.defs.jobs import IN_LOCATION, LOCATION_NAME

ROOT = Path(__file__).parents[2]
SNAPSHOT = Path(__file__).with_name("definitions_snapshot.json")


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


def test_definitions_load_with_jobs_schedule_and_checks():
    defs = load_defs()
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == {
        "feature_tables", "user_features", "restaurant_features", "raw_clicks", "processed_clicks",
        "click_model", "model_evaluation", "model_exports", "model_release", "model_drift",
        "restaurant_geo_index", "online_features", "scoring_benchmark",
        "impressions", "click_events", "labeled_impressions", "online_metrics"}
    for job in ("ingest_clicks", "feature_snapshots", "train_model", "refresh_features", "close_the_loop",
                "release_model"):
        assert defs.resolve_job_def(job).name == job
    assert defs.resolve_sensor_def("feature_source_sensor").job_name == "refresh_features"
    assert defs.resolve_sensor_def("feedback_sensor").job_name == "close_the_loop"
    assert defs.resolve_sensor_def("release_judge_sensor").job_name == "release_model"
    assert defs.resolve_schedule_def("daily_clicks_schedule").cron_schedule == "0 1 * * *"
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey("click_model")).automation_condition.get_label().startswith("at 0 3 * * * UTC")


def test_single_writer_assets_are_in_pools_limited_to_one_step():
    pools = {node.key.to_user_string(): node.pools for node in load_defs().resolve_asset_graph().asset_nodes}
    assert {k: v for k, v in pools.items() if v} == {
        "user_features": {"user_features"}, "restaurant_features": {"restaurant_features"},
        "click_model": {"click_model_checkpoint"}, "model_evaluation": {"click_model_checkpoint"},
        "model_exports": {"model_export"}, "restaurant_geo_index": {"geo_index"},
        "online_features": {"online_store"}, "scoring_benchmark": {"scoring_benchmark"},
        "model_release": {"model_release"}, "model_drift": {"model_drift"}}
    # the partitioned assets rely on the per-day lock instead: a pool would serialize all days
    assert pools["raw_clicks"] == pools["processed_clicks"] == pools["impressions"] == pools["click_events"] \
        == pools["labeled_impressions"] == pools["online_metrics"] == set()
    instance_yaml = yaml.safe_load((ROOT / "deploy/dagster.yaml").read_text())
    assert instance_yaml["concurrency"]["pools"] == {"default_limit": 1}
