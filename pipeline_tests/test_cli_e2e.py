"""The CI-sized end-to-end run, exactly as documented: console commands in a fresh DAGSTER_HOME."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from pipeline.data.clicks import read_manifest
from pipeline.publish import Artifact

BIN = Path(sys.executable).parent


def _run(*args, env):
    done = subprocess.run([str(BIN / args[0]), *args[1:]], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_generate_ingest_a_range_and_train_through_dagster_cli(tmp_path):
    home, data, warehouse = tmp_path / "home", tmp_path / "dataset", tmp_path / "warehouse"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "PIPELINE_DATASET_DIR": str(data),
           "PIPELINE_WAREHOUSE_DIR": str(warehouse), "PIPELINE_START_DATE": "2026-03-01"}
    _run("pipeline", "generate", "--out", str(data), "--preset", "tiny", "--train-files", "4",
         "--quiet", env=env)
    tags = _run("pipeline", "days", "--data", str(data), "--format", "tags", env=env).strip()
    assert json.loads(tags) == {"dagster/asset_partition_range_start": "2026-03-01",
                                "dagster/asset_partition_range_end": "2026-03-04"}
    module = ["-m", "pipeline.definitions"]
    _run("dagster", "asset", "materialize", *module, "--select", "user_features,restaurant_features", env=env)
    # days 1-3 in one ranged run, day 4 on its own (the two documented forms)
    range_tags = json.dumps({"dagster/asset_partition_range_start": "2026-03-01",
                             "dagster/asset_partition_range_end": "2026-03-03"})
    _run("dagster", "job", "execute", *module, "-j", "ingest_clicks", "--tags", range_tags, env=env)
    _run("dagster", "job", "execute", *module, "-j", "ingest_clicks",
         "--tags", json.dumps({"dagster/partition": "2026-03-04"}), env=env)

    _run("dagster", "job", "execute", *module, "-j", "train_model", env=env)

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
