"""An empty or shrunken user table from the source, through the refresh path (the snapshot assets and
online_features, run by Dagster) to a real ``pipeline serve`` on SQLite: it never goes live and known
users keep their answers."""

import os

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.defs.assets.features import restaurant_features, user_features
from pipeline.defs.assets.serving import online_features
from pipeline.defs.resources import LocalParquetSourceResource, OnlineStoreResource, WarehouseResource
from pipeline.publish import Artifact
from pipeline.store.sqlite import SQLiteStore
from pipeline_devtools.api_process import BODY, ApiProcess, health, post
from pipeline_devtools.dagster_runs import step_failures
from pipeline_devtools.published_copies import copy_warehouse

REFRESH = [user_features, restaurant_features, online_features]
KNOWN = [10 * i + 3 for i in range(10)] + [10 * i for i in range(10)]  # 20 users; 10 outside a tenth
ALLOW_SHRINK = {"ops": {name: {"config": {"allow_shrink": True}} for name in ("user_features", "online_features")}}


def _refresh(resources: dict, run_config: dict | None = None):
    with dg.instance_for_test() as instance:
        return dg.materialize(REFRESH, resources=resources, instance=instance, raise_on_error=False,
                              run_config=run_config)


def _replace(path, table) -> None:
    """A new source table, landed as a table export does (a new file renamed over the old one)."""
    staged = path.with_name(".incoming.parquet")
    pq.write_table(table, staged)
    os.replace(staged, path)


def _statuses(base: str, users: list[int]) -> list[int]:
    return [post(base, f"/recommend/{user}", BODY)[0] for user in users]


@pytest.mark.slow
def test_an_empty_or_shrunken_user_table_is_rejected_and_known_users_keep_their_answers(
        serving_artifacts, dataset_copy, tmp_path):
    warehouse = copy_warehouse(serving_artifacts[0], tmp_path / "warehouse")
    database = tmp_path / "online" / "features.db"
    resources = {
        "source": LocalParquetSourceResource(dataset_dir=str(dataset_copy.root), start_date="2026-01-01"),
        "warehouse": WarehouseResource(root=str(warehouse.root)),
        "online_store": OnlineStoreResource(backend="sqlite", sqlite_path=str(database)),
    }
    assert _refresh(resources).success
    store = SQLiteStore(database)
    api = ApiProcess(tmp_path, {"PIPELINE_WAREHOUSE_DIR": str(warehouse.root), "PIPELINE_ONLINE_STORE": "sqlite",
                                "PIPELINE_SQLITE_PATH": str(database)})
    try:
        api.wait_until(ready=True)
        assert _statuses(api.base, KNOWN) == [200] * 20
        snapshot, live = Artifact(warehouse.user_features).live_version(), store.live()
        assert live.users_rows == 5000

        full = pq.read_table(dataset_copy.user_features)
        tenth = full.filter(pa.array(full.column("user_id").to_numpy() % 10 == 0))
        assert tenth.num_rows == 500
        for table, why in ((full.slice(0, 0), "users: the candidate has 0 rows (the live version has 5000)"),
                           (tenth, "users: 500 rows, the live version has 5000")):
            _replace(dataset_copy.user_features, table)
            result = _refresh(resources)
            assert not result.success
            failures = step_failures(result)
            assert "user_features_not_shrunk" in failures and why in failures, failures
            checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
            assert checks["user_features_not_shrunk"] is False
            assert "online_features" not in {e.asset_key.to_user_string()
                                             for e in result.get_asset_materialization_events()}
            assert Artifact(warehouse.user_features).live_version() == snapshot  # the previous snapshot is live
            assert store.live().number == live.number and store.live().users_rows == 5000
            assert _statuses(api.base, KNOWN) == [200] * 20
            assert health(api.base)["ready"] is True

        # a deliberate shrink, allowed by the run's config, goes live
        result = _refresh(resources, ALLOW_SHRINK)
        assert result.success, step_failures(result)
        assert store.live().users_rows == 500 and Artifact(warehouse.user_features).live_version() != snapshot
        assert _statuses(api.base, KNOWN) == [404] * 10 + [200] * 10
    finally:
        store.close()
        api.stop()
