"""The HTTP API as a real server process: answers agree with a brute force, errors name the field,
health and metrics say what is served, a new model is picked up without a failed request, an OpenAPI
fuzz test finds no server error, and health is not ready while the live store version holds no users."""

import json
import sqlite3
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
from pipeline.store.sqlite import SQLiteStore
from pipeline_devtools.api_process import BODY, ApiProcess, get, post
from pipeline_devtools.published_copies import copy_warehouse
from pipeline_devtools.reference_recommender import as_arrays, brute_force


def _post(base, path, body, raw=None):
    return post(base, path, body, raw)[:2]


def test_recommend_agrees_with_brute_force_for_both_id_forms(served_api, serving_artifacts):
    base, _ = served_api
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
def test_bad_input_gets_a_4xx_that_names_the_field(served_api, path, body, raw, status, field):
    got_status, got = _post(served_api[0], path, body, raw)
    assert (got_status, got["field"]) == (status, field), got
    assert got["error"]


def test_health_and_prometheus_metrics(served_api, serving_artifacts):
    base, warehouse = served_api
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


def test_a_new_model_is_picked_up_without_restart_or_failed_requests(served_api):
    base, warehouse = served_api
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
def test_openapi_fuzz_never_yields_a_server_error(served_api, mode):
    base, _ = served_api
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


@pytest.mark.slow
def test_health_is_not_ready_while_the_live_store_version_holds_no_users(serving_artifacts, tmp_path):
    source, tables, _, _ = serving_artifacts
    warehouse = copy_warehouse(source, tmp_path / "warehouse")
    database = tmp_path / "online" / "features.db"
    store = SQLiteStore(database)
    store.publish(FeatureTable.of(tables.user_snapshot), FeatureTable.of(tables.restaurant_snapshot))
    # a live version without users (emptied by hand, or loaded by a release without the shrink rule)
    with sqlite3.connect(database) as connection:
        connection.execute("DELETE FROM user_features")
        connection.execute("UPDATE feature_versions SET users_rows = 0")
    api = ApiProcess(tmp_path, {"PIPELINE_WAREHOUSE_DIR": str(warehouse.root), "PIPELINE_ONLINE_STORE": "sqlite",
                                "PIPELINE_SQLITE_PATH": str(database)})
    try:
        body = api.wait_until(ready=False)
        status, _ = get(api.base, "/health")
        assert status == 503 and body["ready"] is False
        assert "the live store version 1 holds 0 users and 2000 restaurants" in body["reason"]
        assert post(api.base, "/recommend/3", BODY)[0] == 404
        store.publish(FeatureTable.of(tables.user_snapshot), FeatureTable.of(tables.restaurant_snapshot))
        assert api.wait_until(ready=True, timeout_s=10)["store"]["users_rows"] == 5000
    finally:
        store.close()
        api.stop()
