"""Dagster runs for tests: what a run executed in this process reports (its failures, its metadata), the
resources that read a local reference dataset, and runs launched as an operator launches them (``dg
launch`` in its own process), each in its own Dagster instance, warehouse and online store under a
directory, for tests of the executors and of the multi-machine setup."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from pipeline.data.layout import ReferenceDataset
from pipeline.defs.resources import LocalParquetSourceResource, WarehouseResource
from pipeline_devtools import CHECKOUT as ROOT

BIN = Path(sys.executable).parent


def step_failures(result) -> str:
    """Every failed step's error messages, causes included, of a Dagster execution result."""
    messages = []
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            error = event.event_specific_data.error
            while error is not None:
                messages.append(error.message)
                error = error.cause
    return "\n".join(messages)


def local_resources(dataset: ReferenceDataset, warehouse_root: Path, click_events_dir: Path | None = None) -> dict:
    """The source (``dataset``, from 2026-01-01; click events under ``click_events_dir``, default
    ``WAREHOUSE_ROOT/../click_events``) and warehouse resources of a run in this process."""
    clicks = click_events_dir or warehouse_root.parent / "click_events"
    return {"source": LocalParquetSourceResource(dataset_dir=str(dataset.root), start_date="2026-01-01",
                                                 click_events_dir=str(clicks)),
            "warehouse": WarehouseResource(root=str(warehouse_root))}


def materialization_metadata(instance, asset: str, partition: str | None = None) -> dict | None:
    """The metadata values of ``asset``'s latest materialization of ``partition`` among its last 50, or None."""
    records = instance.fetch_materializations(dg.AssetKey(asset), limit=50).records
    for record in records:
        if record.asset_materialization.partition == partition:
            return {k: v.value for k, v in record.asset_materialization.metadata.items()}
    return None


def run_environment(root: Path, dataset: Path, dagster_yaml: Path, start_date: str, **extra: str) -> dict:
    """The environment of a run host (and its workers) whose DAGSTER_HOME (holding a copy of
    ``dagster_yaml``), warehouse and SQLite online store are under ``root``, reading ``dataset`` from
    ``start_date``; ``extra`` variables on top. REDIS_URL and PIPELINE_ONLINE_STORE of this process are
    dropped (``extra`` may set them)."""
    home, warehouse = root / "home", root / "warehouse"
    for directory in (home, warehouse, root / "online"):
        directory.mkdir(parents=True)
    (home / "dagster.yaml").write_text(dagster_yaml.read_text())
    env = {**os.environ, "DAGSTER_HOME": str(home), "PIPELINE_DATASET_DIR": str(dataset),
           "PIPELINE_WAREHOUSE_DIR": str(warehouse), "PIPELINE_SQLITE_PATH": str(root / "online/f.db"),
           "PIPELINE_START_DATE": start_date, "VIRTUAL_ENV": str(BIN.parent), "PATH": f"{BIN}:{os.environ['PATH']}"}
    for name in ("PIPELINE_END_DATE", "REDIS_URL", "PIPELINE_ONLINE_STORE"):
        env.pop(name, None)
    return {**env, **extra}


def launch(env: dict, *args: str) -> str:
    """``dg launch ARGS`` from the project's root; its output (stdout, then stderr). Fails the caller
    (AssertionError) when the run fails or Dagster warns."""
    done = subprocess.run([str(BIN / "dg"), "launch", *args], env=env, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Warning" not in done.stderr, done.stderr[-3000:]
    return done.stdout + done.stderr
