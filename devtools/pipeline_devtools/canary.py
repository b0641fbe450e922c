"""A champion and a challenger of the tiny (or any) dataset, served and judged on simulated traffic:
the canary test's and the canary benchmark's set-up."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.data.layout import ReferenceDataset, Warehouse
from pipeline.feedback import click_events
from pipeline.feedback.simulate import simulate
from pipeline.geo.index import GeoIndex
from pipeline.model.batches import FeatureTables
from pipeline.model.training import TrainConfig, train
from pipeline.release.exporting import export_roles
from pipeline.release.judge import Policy
from pipeline.release.operations import judge_canary
from pipeline.store.sqlite import SQLiteStore
from pipeline_devtools.api_process import load_features
from pipeline_devtools.warehouse_build import build_warehouse

GOOD = TrainConfig(mode="full", epochs=3, batch_size=512, threads=1)
POOR = TrainConfig(mode="full", epochs=1, batch_size=512, threads=1, lr=3e-5, seed=5)  # undertrained


def quiet(message: str) -> None:
    pass


def champion_and_challenger(dataset: ReferenceDataset, root: Path, better: bool) -> tuple[Warehouse, dict]:
    """A warehouse whose champion is undertrained and challenger well trained (``better``), or the
    reverse, both exported, with a geo index and a SQLite store of its features; the settings that
    serve it. The challenger is recorded by training without a gate: the canary, not an offline
    comparison, is what is under test."""
    warehouse = build_warehouse(dataset, root / "warehouse", chunk_rows=4000)
    first, second = (POOR, GOOD) if better else (GOOD, POOR)
    train(warehouse, first, log=quiet)
    train(warehouse, second, log=quiet)
    export_roles(warehouse, 120)
    tables = FeatureTables.load(warehouse)
    restaurants = tables.restaurant_snapshot
    GeoIndex.build(restaurants.ids, restaurants.locations[:, 0], restaurants.locations[:, 1]).publish(
        warehouse.geo_index, restaurants.ids)
    store = SQLiteStore(root / "features.db")
    load_features(store, tables)
    store.close()
    return warehouse, {"PIPELINE_WAREHOUSE_DIR": str(warehouse.root), "PIPELINE_ONLINE_STORE": "sqlite",
                       "PIPELINE_SQLITE_PATH": str(root / "features.db"), "PIPELINE_IMPRESSION_FLUSH_S": "0.5"}


@dataclass
class CanaryRun:
    verdicts: list = field(default_factory=list)
    decision: dict = field(default_factory=dict)
    decided_at: float = 0.0        # time.monotonic() of the decision
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0


def judge_on_traffic(dataset: ReferenceDataset, warehouse: Warehouse, url: str, clicks_dir: Path, policy: Policy,
                     rate: float = 100.0, step_s: float = 4.0, max_steps: int = 30) -> CanaryRun:
    """Simulated traffic in steps of ``step_s`` seconds (each step writes its clicks), the judge
    after each, until it decides (promote or retire) or ``max_steps`` pass."""
    run, started = CanaryRun(), time.monotonic()
    for step in range(max_steps):
        summary = simulate(dataset.root, url, rate, step_s, seed=step, out=clicks_dir)
        run.requests += summary["requests"]
        run.errors += summary["errors"] + summary["skipped"]
        time.sleep(0.8)  # the workers' last segments (flushed every 0.5 s)
        verdict, done = judge_canary(warehouse, warehouse.root / "impression_log",
                                     lambda day: click_events.day_files(clicks_dir, day), policy)
        run.verdicts.append(verdict)
        if done:
            run.decision, run.decided_at = done, time.monotonic()
            break
    run.seconds = time.monotonic() - started
    return run
