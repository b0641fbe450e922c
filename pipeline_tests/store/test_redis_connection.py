"""How Redis clients connect: AUTH (``--requirepass``, an ACL user) and TLS (``rediss://`` with a CA made
by the fixture) for the online store, the shared-state check and the API against real redis-servers; the
TLS options, and URLs named with their password masked."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from pipeline import shared_state
from pipeline.redaction import MASK, redact
from pipeline.store.base import FeatureTable, StoreUnavailable
from pipeline.store.factory import open_store
from pipeline.store.redis_connection import celery_ssl_options, client_options, display_url
from pipeline.store.redis_store import RedisStore
from pipeline_devtools.api_process import ApiProcess, post
from pipeline_devtools.published_copies import copy_warehouse
from pipeline_devtools.redis_server import SECURED_SERVERS, redis_server


def _tables(users: int, seed: int) -> tuple[FeatureTable, FeatureTable]:
    rng = np.random.default_rng(seed)
    return (FeatureTable(np.arange(users, dtype=np.int64), rng.random((users, 30), dtype=np.float32), f"u{seed}"),
            FeatureTable(np.arange(50, dtype=np.int64), rng.random((50, 10), dtype=np.float32), f"r{seed}"))


@pytest.fixture(params=list(SECURED_SERVERS), scope="module")
def server(request):
    with redis_server(**SECURED_SERVERS[request.param]) as started:
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
    options = SECURED_SERVERS[[name for name, o in SECURED_SERVERS.items() if server.password == o["password"]][0]]
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
    with redis_server(**SECURED_SERVERS["tls + acl user"]) as server:
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
    assert SECURED_SERVERS["tls + acl user"]["password"] not in log


def test_a_redis_url_registers_its_password_raw_and_decoded():
    client_options("redis://:d%40ta-p%2Fss@127.0.0.1:1/0")
    assert redact("AUTH d@ta-p/ss failed; d%40ta-p%2Fss") == f"AUTH {MASK} failed; {MASK}"
    assert display_url("redis://:d%40ta-p%2Fss@127.0.0.1:1/0") == "redis://:***@127.0.0.1:1/0"


def test_redis_tls_options_and_bad_urls_name_the_masked_url(tmp_path):
    assert client_options("redis://:pw@h:1/0") == {}
    ca = tmp_path / "ca.crt"
    ca.write_text("not checked here")
    assert client_options("rediss://:pw@h:1/0", str(ca)) == {"ssl_cert_reqs": "required", "ssl_ca_certs": str(ca)}
    assert celery_ssl_options("rediss://:pw@h:1/0", str(ca)) == {"ssl_cert_reqs": "required",
                                                                  "ssl_ca_certs": str(ca)}
    assert celery_ssl_options("redis://:pw@h:1/0", str(ca)) is None
    with pytest.raises(ValueError, match=r"PIPELINE_REDIS_CA_FILE=.*missing.pem is not a file.*rediss://:\*\*\*@h"):
        client_options("rediss://:topsecret1@h:1/0", str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match=r"must start with redis://") as refused:
        client_options("http://:topsecret2@h:1/0")
    assert "topsecret2" not in str(refused.value)
