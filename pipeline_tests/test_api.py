"""The HTTP API as a real server process, on a real Redis: answers, errors, health, metrics,
hot model swaps, an OpenAPI fuzz test and the load generator."""

import json
import subprocess
import threading
import time

import numpy as np
import pytest
import schemathesis
import torch
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from pipeline.model.export import publish_export
from pipeline.model.network import ClickMLP
from pipeline.publish import Artifact
from pipeline.store.base import FeatureTable
from pipeline.store.redis_store import RedisStore
from pipeline_tests.api_process import BIN, ApiProcess, copy_warehouse, get, post
from pipeline_tests.reference_recommender import as_arrays, brute_force


def _post(base, path, body, raw=None):
    return post(base, path, body, raw)[:2]


@pytest.fixture(scope="module")
def api(serving_artifacts, redis_url, tmp_path_factory):
    """A served copy of the tiny artifacts; features in Redis; yields (base URL, warehouse)."""
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


def test_recommend_agrees_with_brute_force_for_both_id_forms(api, serving_artifacts):
    base, _ = api
    _, tables, _, model = serving_artifacts
    body = {"candidate_restaurant_ids": list(range(0, 2000, 3)), "latitude": 13.85, "longitude": 100.55,
            "size": 10, "max_dist": 9000, "sort_dist": False}
    status, answer = _post(base, "/recommend/u00042", body)
    assert status == 200 and len(answer["restaurants"]) == 10
    assert _post(base, "/recommend/42", body) == (200, answer)
    ids, scores, dists = as_arrays(brute_force(model, tables, 42, 13.85, 100.55, body["candidate_restaurant_ids"],
                                               10, 9000, False))
    assert [r["id"] for r in answer["restaurants"]] == ids.tolist()
    np.testing.assert_allclose([r["score"] for r in answer["restaurants"]], scores, rtol=1e-5)
    np.testing.assert_allclose([r["displacement"] for r in answer["restaurants"]], dists, rtol=1e-9)
    status, by_distance = _post(base, "/recommend/42", {**body, "sort_dist": True})
    displacements = [r["displacement"] for r in by_distance["restaurants"]]
    assert status == 200 and displacements == sorted(displacements)
    # defaults: size 20, max_dist 5000, no candidate list → every restaurant in range
    status, defaults = _post(base, "/recommend/7", {"latitude": 13.85, "longitude": 100.55})
    assert status == 200 and len(defaults["restaurants"]) <= 20
    assert all(r["displacement"] <= 5000 for r in defaults["restaurants"])


GOOD = {"candidate_restaurant_ids": [1, 2, 3], "latitude": 13.8, "longitude": 100.6}


@pytest.mark.parametrize("path, body, raw, status, field", [
    ("/recommend/1", None, b"{not json", 400, "body"),
    ("/recommend/1", {"longitude": 100.6}, None, 422, "latitude"),
    ("/recommend/1", {**GOOD, "latitude": "north"}, None, 422, "latitude"),
    ("/recommend/1", {**GOOD, "latitude": 90.5}, None, 422, "latitude"),
    ("/recommend/1", {**GOOD, "longitude": -181}, None, 422, "longitude"),
    ("/recommend/1", {**GOOD, "size": 0}, None, 422, "size"),
    ("/recommend/1", {**GOOD, "size": 2.5}, None, 422, "size"),
    ("/recommend/1", {**GOOD, "max_dist": -1}, None, 422, "max_dist"),
    ("/recommend/1", {**GOOD, "candidate_restaurant_ids": list(range(10_001))}, None, 422, "candidate_restaurant_ids"),
    ("/recommend/1", {**GOOD, "candidate_restaurant_ids": [1, 2.5]}, None, 422, "candidate_restaurant_ids.1"),
    ("/recommend/1", {**GOOD, "candidate_restaurant_ids": [1, "7"]}, None, 422, "candidate_restaurant_ids.1"),
    ("/recommend/1", {**GOOD, "candidate_restaurant_ids": [2**70]}, None, 422, "candidate_restaurant_ids.0"),
    ("/recommend/1", {**GOOD, "sort_dist": "yes"}, None, 422, "sort_dist"),
    ("/recommend/1", [1, 2], None, 422, "body"),
    ("/recommend/user7", GOOD, None, 422, "user_id"),
    ("/recommend/-3", GOOD, None, 422, "user_id"),
    ("/recommend/u99999999", GOOD, None, 404, "user_id"),
])
def test_bad_input_gets_a_4xx_that_names_the_field(api, path, body, raw, status, field):
    got_status, got = _post(api[0], path, body, raw)
    assert (got_status, got["field"]) == (status, field), got
    assert got["error"]


def test_health_and_prometheus_metrics(api, serving_artifacts):
    base, warehouse = api
    tables = serving_artifacts[1]
    status, text = get(base, "/health")
    health = json.loads(text)
    assert status == 200 and health["ready"]
    # what is served, and what it pairs with: the model, the features it was trained on, the store's live version
    assert health["model_version"] == Artifact(warehouse.export).live_version()
    # the fastest of the three verified formats, as measured when it was published
    assert health["model_format"] == Artifact(warehouse.export).record()["serve"]
    assert health["model_format"] in ("torchscript", "exported_program", "onnx")
    assert health["model_feature_versions"]["users"] == tables.user_snapshot.version
    assert health["geo_index_version"] == Artifact(warehouse.geo_index).live_version()
    assert health["store"]["users_version"] == tables.user_snapshot.version and health["store"]["version"] >= 1
    _post(base, "/recommend/1", GOOD)
    _post(base, "/recommend/1", {"latitude": 95, "longitude": 0})
    status, metrics = get(base, "/metrics")
    assert status == 200
    assert 'recommend_requests_total{status="200"}' in metrics and 'recommend_requests_total{status="422"}' in metrics
    assert "recommend_latency_seconds_bucket{le=\"0.005\"}" in metrics
    assert f'model_info{{version="{health["model_version"]}"}} 1.0' in metrics


def test_a_new_model_is_picked_up_without_restart_or_failed_requests(api):
    base, warehouse = api
    before_version = json.loads(get(base, "/health")[1])["model_version"]
    _, before = _post(base, "/recommend/5", {**GOOD, "candidate_restaurant_ids": list(range(300)), "max_dist": 30000})
    statuses, stop = [], threading.Event()

    def hammer():
        while not stop.is_set():
            statuses.append(_post(base, "/recommend/5", GOOD)[0])

    thread = threading.Thread(target=hammer)
    thread.start()
    torch.manual_seed(123)
    publish_export(ClickMLP(), warehouse.export, torch.randn(64, 40), record={})  # as the asset does
    deadline = time.monotonic() + 20
    while json.loads(get(base, "/health")[1])["model_version"] == before_version:
        assert time.monotonic() < deadline, "the new model was not picked up"
        time.sleep(0.1)
    time.sleep(0.3)
    stop.set()
    thread.join()
    _, after = _post(base, "/recommend/5", {**GOOD, "candidate_restaurant_ids": list(range(300)), "max_dist": 30000})
    assert len(statuses) > 5 and set(statuses) == {200}
    assert [r["score"] for r in after["restaurants"]] != [r["score"] for r in before["restaurants"]]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_openapi_fuzz_never_yields_a_server_error(api, mode):
    base, _ = api
    schema = schemathesis.openapi.from_url(base + "/openapi.json")
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path != "/recommend/{user_id}":
            continue

        @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        @given(case=operation.as_strategy(generation_mode=mode))
        def call(case):
            response = case.call(base_url=base)
            assert response.status_code < 500, (case.path_parameters, case.body, response.text)
            if response.status_code >= 400:
                assert "error" in response.json()

        call()


def test_loadtest_cli_reports_and_ramps(api, tiny_dataset):
    base, _ = api
    done = subprocess.run([str(BIN / "pipeline"), "loadtest", "--url", base, "--requests", str(tiny_dataset.requests),
                           "--rate", "40", "--duration", "2"], capture_output=True, text=True, timeout=60)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0 and result["errors"] == 0 and result["requests"] == 80
    assert 30 < result["achieved_rps"] < 50 and 0 < result["p50_ms"] <= result["p95_ms"] <= result["max_ms"]
    done = subprocess.run([str(BIN / "pipeline"), "loadtest", "--url", base, "--requests", str(tiny_dataset.requests),
                           "--duration", "1", "--ramp", "--ramp-rates", "20,50"], capture_output=True, text=True,
                          timeout=60)
    ramp = json.loads(done.stdout.strip().splitlines()[-1])
    assert ramp["max_rps"] == 50 and [s["rate"] for s in ramp["steps"]] == [20, 50]
