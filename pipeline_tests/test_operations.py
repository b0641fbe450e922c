"""``pipeline status`` and ``pipeline rollback features`` through the real command, on a real SQLite store
(a model's rollback: pipeline_tests/release/test_operations.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from pipeline.data.features import RESTAURANTS, USERS, load_snapshot
from pipeline.model.training import TrainConfig, train
from pipeline.release.exporting import export_roles
from pipeline.store.base import FeatureTable
from pipeline.store.sqlite import SQLiteStore
from pipeline_devtools.warehouse_build import build_warehouse

BIN = Path(sys.executable).parent


def _pipeline(*args, env):
    done = subprocess.run([str(BIN / "pipeline"), *args], env=env, capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout, done.stderr


def _train_and_export(warehouse):
    train(warehouse, TrainConfig(batch_size=512, threads=1), log=lambda message: None)
    return export_roles(warehouse, 120)[0]


def test_status_then_roll_back_the_online_features(tiny_dataset, tmp_path):
    warehouse = build_warehouse(tiny_dataset, tmp_path / "wh", chunk_rows=1500, days=2)
    first = _train_and_export(warehouse)
    build_warehouse(tiny_dataset, warehouse.root, chunk_rows=1500)  # day 3 arrives
    second = _train_and_export(warehouse)
    store_path = tmp_path / "online.db"
    store = SQLiteStore(store_path)
    users, restaurants = (load_snapshot(warehouse.user_features, USERS),
                          load_snapshot(warehouse.restaurant_features, RESTAURANTS))
    for _ in range(2):
        store.publish(FeatureTable.of(users), FeatureTable.of(restaurants))
    env = {**os.environ, "PIPELINE_WAREHOUSE_DIR": str(warehouse.root), "PIPELINE_SQLITE_PATH": str(store_path),
           "PIPELINE_ONLINE_STORE": "sqlite"}

    code, out, _ = _pipeline("status", env=env)
    live = json.loads(out)
    assert code == 0 and live["roles"]["champion"] == first.champion == live["export"]["checkpoint_version"]
    assert live["roles"]["challenger"] == second.challenger == live["checkpoint"]["version"]
    assert live["roles"]["last_decision"]["role"] == "challenger"
    assert live["checkpoint"]["trained_days"] == 3 and live["processed_days"] == tiny_dataset.days()
    assert live["features"]["users"]["version"] == users.version and live["unfinished_training_run"] is None
    assert live["online_store"]["live"]["number"] == 2 and live["online_store"]["versions"] == [1, 2]

    code, out, _ = _pipeline("rollback", "features", env=env)
    assert code == 0 and json.loads(out) == {"online_store": {"from": 2, "to": 1}}
    assert store.live().number == 1 and store.fetch(0, []).version == 1
    code, _, err = _pipeline("rollback", "features", env=env)
    assert code == 1 and "no previous version is kept" in err
    store.close()
