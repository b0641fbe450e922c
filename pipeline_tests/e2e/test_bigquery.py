"""Pointing the pipeline at BigQuery is configuration: ``dg check defs`` and ``dg launch`` against a real
BigQuery API endpoint on loopback, chosen by environment variables only."""

import os

import dagster as dg
import pytest

from pipeline.data.processed_partition import read_manifest
from pipeline.publish import Artifact
from pipeline_devtools.bigquery_emulator import DATASET
from pipeline_devtools.commands import console


@pytest.mark.slow
def test_pointing_the_pipeline_at_bigquery_is_configuration(emulator, tmp_path):
    """dg check defs and dg launch, with nothing but environment variables choosing BigQuery."""
    env = {**os.environ, **emulator.settings(DATASET), "DAGSTER_HOME": str(tmp_path / "home"),
           "PIPELINE_WAREHOUSE_DIR": str(tmp_path / "warehouse"), "PIPELINE_DATASET_DIR": str(tmp_path / "none"),
           "PIPELINE_END_DATE": "2026-01-03"}
    (tmp_path / "home").mkdir()
    assert "All definitions loaded successfully" in console("dg", "check", "defs", env=env)
    console("dg", "launch", "--job", "feature_snapshots", env=env)
    console("dg", "launch", "--job", "ingest_clicks", "--partition-range", "2026-01-01...2026-01-03", env=env)
    for day in ("2026-01-01", "2026-01-02", "2026-01-03"):
        record = Artifact(tmp_path / "warehouse" / "raw_clicks" / f"date={day}").current().record
        assert record["origin"] == f"bigquery://{emulator.project}.{DATASET}.clicks/day={day}"
        assert read_manifest(tmp_path / "warehouse" / "processed_clicks" / f"date={day}")["rows"] > 0
    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("user_features"))
        source_version = event.asset_materialization.metadata["source_version"].value
        assert source_version == emulator.source_resource(dataset=DATASET).feature_version()
