"""Redis AUTH (``--requirepass``, an ACL user) and TLS (``rediss://`` with a CA made by the fixture) for
the online store, the shared-state check, the API and the Celery broker, against real redis-servers."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from devtools.redis_server import redis_server
from pipeline import shared_state
from pipeline.store.base import FeatureTable, StoreUnavailable
from pipeline.store.factory import open_store
from pipeline.store.redis_store import RedisStore
from pipeline_tests.api_process import ApiProcess, copy_warehouse, post

SERVERS = {
    "requirepass": {"password": "rp-Secret-0451"},
    "acl user": {"user": "pipeline", "password": "acl-Secret-9920"},
    "tls + acl user": {"user": "pipeline", "password": "tls-Secret-3318", "tls": True},
}


def _tables(users: int, seed: int) -> tuple[FeatureTable, FeatureTable]:
    rng = np.random.default_rng(seed)
    return (FeatureTable(np.arange(users, dtype=np.int64), rng.random((users, 30), dtype=np.float32), f"u{seed}"),
            FeatureTable(np.arange(50, dtype=np.int64), rng.random((50, 10), dtype=np.float32), f"r{seed}"))


@pytest.fixture(params=list(SERVERS), scope="module")
def server(request):
    with redis_server(**SERVERS[request.param]) as started:
        yield started


def test_the_store_publishes_fetches_and_rolls_back_through_auth_and_tls(server):
    store = open_store("redis", server.url, "", timeout_s=5, redis_ca_file=server.ca_file)
    try:
        first_users, first_restaurants = _tables(20, 1)
        first = store.publish(first_users, first_restaurants)
        second_users, second_restaurants = _tables(20, 2)
        second = store.publish(second_users, second_restaurants)
        fetched = store.fetch(3, [1, 2, 49, 999])
        assert fetched.version == second.number and np.array_equal(fetched.user, second_users.values[3])
        assert fetched.found.tolist() == [True, True, True, False]
        assert np.array_equal(fetched.restaurants, second_restaurants.values[[1, 2, 49]])

        async def read_async():
            try:
                return await store.fetch_async(3, [1])
            finally:
                await store.close_async()

        assert np.array_equal(asyncio.run(read_async()).user, second_users.values[3])
        assert store.rollback() == (second.number, first.number)
        assert np.array_equal(store.fetch(3, []).user, first_users.values[3])
        assert shared_state.redis_problem("the online store", server.url, 5, server.ca_file) is None
    finally:
        store.close()


def test_wrong_or_missing_credentials_and_an_unverified_server_are_clear_redacted_errors(server):
    options = SERVERS[[name for name, o in SERVERS.items() if server.password == o["password"]][0]]
    password = options["password"]
    wrong = server.url.replace(password, "Wrong-Pass-5521")
    missing = server.url.replace(f":{password}@", "@")
    cases = [(wrong, server.ca_file, "AuthenticationError"), (missing, server.ca_file, "Authentication")]
    if server.tls:
        cases.append((server.url, "", "SSLError|certificate verify failed"))  # the system CAs do not know the fixture's
    for url, ca_file, expected in cases:
        store = RedisStore(url, timeout_s=3, ca_file=ca_file)
        try:
            with pytest.raises(StoreUnavailable, match=expected) as refused:
                store.live()
        finally:
            store.close()
        problem = shared_state.redis_problem("the online store (REDIS_URL)", url, 3, ca_file)
        for message in (str(refused.value), problem):
            assert f"127.0.0.1:{server.port}/0" in message and password not in message, message
            assert "Wrong-Pass-5521" not in message, message


@pytest.mark.slow
def test_the_api_serves_from_a_tls_redis_with_an_acl_user(serving_artifacts, tmp_path):
    source, tables, _, _ = serving_artifacts
    warehouse = copy_warehouse(source, tmp_path / "warehouse")
    with redis_server(**SERVERS["tls + acl user"]) as server:
        store = RedisStore(server.url, ca_file=server.ca_file)
        store.publish(FeatureTable.of(tables.user_snapshot), FeatureTable.of(tables.restaurant_snapshot))
        store.close()
        api = ApiProcess(tmp_path, {"PIPELINE_WAREHOUSE_DIR": str(warehouse.root), "REDIS_URL": server.url,
                                    "PIPELINE_ONLINE_STORE": "redis", "PIPELINE_REDIS_CA_FILE": server.ca_file})
        try:
            assert api.wait_until(ready=True)["store"]["version"] == 1
            status, body, _ = post(api.base, "/recommend/7", {"candidate_restaurant_ids": list(range(0, 2000, 7)),
                                                              "latitude": 13.8, "longitude": 100.6, "max_dist": 20000})
            assert status == 200 and body["restaurants"], body
        finally:
            log = api.stop()
    assert SERVERS["tls + acl user"]["password"] not in log


def test_the_celery_broker_and_backend_connect_over_tls_with_auth(monkeypatch):
    pytest.importorskip("dagster_celery")
    from pipeline import worker
    from pipeline.settings import load_settings

    with redis_server(**SERVERS["tls + acl user"]) as server:
        monkeypatch.setenv("PIPELINE_CELERY_BROKER_URL", server.url)
        monkeypatch.delenv("PIPELINE_CELERY_BACKEND_URL", raising=False)
        monkeypatch.setenv("PIPELINE_CELERY_TIMEOUT_S", "3")
        monkeypatch.setenv("PIPELINE_REDIS_CA_FILE", server.ca_file)
        settings = load_settings()
        config = worker.executor_config(settings)["config_source"]
        expected_tls = {"ssl_cert_reqs": "required", "ssl_ca_certs": server.ca_file}
        assert config["broker_use_ssl"] == expected_tls and config["redis_backend_use_ssl"] == expected_tls
        app = worker.celery_app(settings)
        assert worker.broker_problem(app, settings) is None
        assert app.backend.client.ping()  # the result backend, over TLS with the same CA
        monkeypatch.setenv("PIPELINE_CELERY_BROKER_URL", server.url.replace(SERVERS["tls + acl user"]["password"],
                                                                             "Wrong-Pass-5521"))
        wrong = load_settings()
        problem = worker.broker_problem(worker.celery_app(wrong), wrong)
        assert problem and "rediss://pipeline:***@127.0.0.1" in problem and "Wrong-Pass-5521" not in problem, problem
