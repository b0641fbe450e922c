"""The API tests' servers: real ``pipeline serve`` processes over a private copy of the tiny dataset's
artifacts, features in a real redis-server or SQLite file."""

from __future__ import annotations

import pytest

from pipeline.store.base import FeatureTable
from pipeline.store.redis_store import RedisStore
from pipeline_devtools.api_process import ApiProcess, load_features, sqlite_serving
from pipeline_devtools.published_copies import copy_warehouse
from pipeline_devtools.redis_server import RedisServer


@pytest.fixture(scope="module")
def served_api(serving_artifacts, redis_url, tmp_path_factory):
    """A served copy of the tiny artifacts, features in the session's Redis, shared by a module's tests;
    yields (base URL, warehouse)."""
    source, tables, geo, model = serving_artifacts
    root = tmp_path_factory.mktemp("api")
    warehouse = copy_warehouse(source, root / "warehouse")
    store = RedisStore(redis_url)
    store.publish(FeatureTable.of(tables.user_snapshot), FeatureTable.of(tables.restaurant_snapshot))
    store.close()
    server = ApiProcess(root, {"PIPELINE_WAREHOUSE_DIR": str(warehouse.root), "REDIS_URL": redis_url,
                               "PIPELINE_ONLINE_STORE": "redis"})
    server.wait_until(ready=True)
    yield server.base, warehouse
    server.stop()


@pytest.fixture
def sqlite_api(serving_artifacts, tmp_path):
    """A served copy of the tiny artifacts with features in a SQLite file of its own, header and body
    timeouts of 1 s; (api, the SQLite file, warehouse)."""
    path = tmp_path / "online" / "features.db"
    warehouse, env = sqlite_serving(serving_artifacts, tmp_path, path)
    api = ApiProcess(tmp_path, {**env, "PIPELINE_API_HEADER_TIMEOUT_S": "1", "PIPELINE_API_BODY_TIMEOUT_S": "1"})
    api.wait_until(ready=True)
    yield api, path, warehouse
    api.stop()


@pytest.fixture
def redis_process(tmp_path):
    """A redis-server of the test's own (no password), stopped after it."""
    server = RedisServer(str(tmp_path)).start()
    yield server
    server.stop()


@pytest.fixture
def redis_api(serving_artifacts, redis_process, tmp_path):
    """A served copy of the tiny artifacts with features in a Redis of its own; (api, redis, warehouse)."""
    source, tables, _, _ = serving_artifacts
    warehouse = copy_warehouse(source, tmp_path / "warehouse")
    store = RedisStore(redis_process.url)
    load_features(store, tables)
    store.close()
    api = ApiProcess(tmp_path, {"PIPELINE_WAREHOUSE_DIR": str(warehouse.root), "REDIS_URL": redis_process.url,
                                "PIPELINE_ONLINE_STORE": "redis"})
    api.wait_until(ready=True)
    yield api, redis_process, warehouse
    api.stop()
