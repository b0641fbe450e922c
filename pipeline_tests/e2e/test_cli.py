"""The CI-sized end-to-end run, exactly as documented: console commands in a fresh DAGSTER_HOME."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from pipeline.data.processed_partition import read_manifest
from pipeline.publish import Artifact
from pipeline.release.registry import Registry
from pipeline_devtools import CHECKOUT
from pipeline_devtools.api_process import ApiProcess
from pipeline_devtools.commands import console

BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_generate_ingest_a_range_train_serve_and_close_the_loop_through_the_cli(tmp_path):
    home, data, warehouse = tmp_path / "home", tmp_path / "dataset", tmp_path / "warehouse"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "PIPELINE_DATASET_DIR": str(data),
           "PIPELINE_WAREHOUSE_DIR": str(warehouse), "PIPELINE_START_DATE": "2026-03-01",
           "PIPELINE_SQLITE_PATH": str(tmp_path / "online" / "features.db"),
           "PIPELINE_CLICK_EVENTS_DIR": str(tmp_path / "click_events"),
           "VIRTUAL_ENV": str(BIN.parent), "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("PIPELINE_END_DATE", None)  # the partitions end on the dataset's last day
    console("pipeline", "generate", "--out", str(data), "--preset", "tiny", "--train-files", "4",
         "--quiet", env=env)
    assert console("pipeline", "days", "--data", str(data), "--format", "range", env=env).strip() == \
        "2026-03-01...2026-03-04"
    assert "All definitions loaded successfully" in console("dg", "check", "defs", env=env)
    # the supported commands (dg launch), and the one CI and users still run (dagster job execute -m)
    launched = console("dg", "launch", "--job", "feature_snapshots", env=env)
    launched += console("dg", "launch", "--job", "ingest_clicks", "--partition-range", "2026-03-01...2026-03-03",
                     env=env)
    assert "Warning" not in launched, launched  # no Beta/Preview/Supersession notices
    module = ["-m", "pipeline.definitions"]
    console("dagster", "job", "execute", *module, "-j", "ingest_clicks",
         "--tags", json.dumps({"dagster/partition": "2026-03-04"}), env=env)
    console("dagster", "job", "execute", *module, "-j", "train_model", env=env)

    days = ["2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04"]
    for day in days:
        assert read_manifest(warehouse / f"processed_clicks/date={day}")["rows"] == 10_000
    assert (warehouse / "models/click_model/export/model.pt").exists()
    assert Artifact(warehouse / "models/click_model/checkpoint").record()["trained_days"] == days
    evaluation = json.loads((warehouse / "models/click_model/checkpoint/evaluation.json").read_text())
    assert evaluation["accuracy"] > evaluation["all_zeros_accuracy"]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_materialized_partitions(dg.AssetKey("processed_clicks")) == set(days)
        assert instance.get_materialized_partitions(dg.AssetKey("raw_clicks")) == set(days)
        runs = instance.get_runs()
        assert len(runs) == 4 and all(r.is_success for r in runs)
        # every run is filed under the code location (its job's page in the UI lists it)
        assert {r.tags.get(".dagster/repository") for r in runs} == {"__repository__@pipeline"}
        ranged = [r for r in runs if r.tags.get("dagster/asset_partition_range_start")]
        assert len(ranged) == 1 and ranged[0].tags["dagster/asset_partition_range_end"] == "2026-03-03"
    _serve_a_simulated_day_and_train_on_it(env, tmp_path, warehouse, days)


def _serve_a_simulated_day_and_train_on_it(env: dict, tmp_path: Path, warehouse: Path, days: list[str]) -> None:
    """As make demo: the API serves simulated traffic, the day's log and clicks are labeled, measured,
    added to the day's raw clicks and trained on."""
    module = ["-m", "pipeline.definitions"]
    console("dagster", "asset", "materialize", *module, "--select", "restaurant_geo_index,online_features", env=env)
    api = ApiProcess(tmp_path, {k: v for k, v in env.items() if k.startswith("PIPELINE_")})
    try:
        api.wait_until(ready=True)
        output = console("pipeline", "simulate", "--url", api.base, "--rate", "40", "--duration", "2", "--seed", "2",
                         env=env)
        simulated = json.loads(next(line for line in output.splitlines() if line.startswith("{")))
    finally:
        api.stop()
    assert simulated["answered"] == simulated["requests"] == 80 and simulated["clicks"] > 0
    expected = simulated["expected"]
    assert expected["served"]["ctr_at_5"] > expected["random"]["ctr_at_5"]
    served = console("pipeline", "days", "--served", "--format", "last", env=env).strip()
    # close_the_loop, then the day's raw and processed clicks, in one command
    console("dagster", "asset", "materialize", *module, "--partition", served, "--select",
            "impressions,click_events,labeled_impressions,online_metrics,raw_clicks,processed_clicks", env=env)
    champion = Registry(warehouse / "models/click_model/registry").roles().champion
    trained = subprocess.run([str(BIN / "dagster"), "asset", "materialize", *module, "--select",
                              "click_model,model_evaluation"], env=env, capture_output=True, text=True, cwd=CHECKOUT)
    labeled = Artifact(warehouse / f"labeled_impressions/date={served}").record()
    assert labeled["rows"] == simulated["impressions"] and labeled["clicks"] == simulated["clicks"]
    assert labeled["unknown_request_clicks"] == 0
    held = pl.read_parquet(Artifact(warehouse / f"labeled_impressions/date={served}").live() / "labeled.parquet") \
        .filter(pl.col("held_out")).get_column("request_id").n_unique()
    # one per answer (rank 1: training_ranks), but the requests held out for the release evaluation
    assert labeled["training_rows"] == simulated["answered"] - held
    assert read_manifest(warehouse / f"processed_clicks/date={served}")["rows"] == simulated["answered"] - held
    # the retrain on the served day is compared with the champion: on this tiny day its calibration moves by
    # about the margin (rank-1 clicks are nearly all positives), so either decision is the gate's to take
    roles = Registry(warehouse / "models/click_model/registry").roles()
    decision = roles.history[-1]
    if decision.role == "rejected":
        assert trained.returncode != 0 and "not_worse_than_champion" in decision.reason
        assert roles.champion == champion and roles.challenger is None
    else:
        assert trained.returncode == 0 and decision.role == "challenger" and roles.champion == champion
        assert Artifact(warehouse / "models/click_model/checkpoint").record()["trained_days"] == [*days, served]
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        metrics = instance.get_latest_materialization_event(dg.AssetKey("online_metrics")).asset_materialization
        assert metrics.partition == served and metrics.metadata["clicks"].value == simulated["clicks"]
