"""The API as operators meet it: the store stalls, dies, comes back empty, its file vanishes; a
bad model or a torn geo index is published; clients send huge, slow or mistyped requests. Each
case runs a real ``pipeline serve`` process against a real redis-server or SQLite file."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import torch
import uvicorn

from devtools.redis_server import free_port
from pipeline.api.app import create_app
from pipeline.api.artifacts import Artifacts
from pipeline.geo.index import CELLS_FILE, TABLE_FILE, GeoIndex
from pipeline.integrity import RECORD
from pipeline.model.export import MODEL_FILE, publish_export
from pipeline.model.network import ClickMLP
from pipeline.publish import Artifact, write_audit_publish
from pipeline.store.redis_store import RedisStore
from pipeline.store.sqlite import SQLiteStore
from pipeline_tests.api_process import (
    BODY,
    ApiProcess,
    copy_warehouse,
    get,
    health,
    load_features,
    post,
    sqlite_serving,
    wait_for,
)


@pytest.fixture
def sqlite_api(serving_artifacts, tmp_path):
    path = tmp_path / "online" / "features.db"
    warehouse, env = sqlite_serving(serving_artifacts, tmp_path, path)
    api = ApiProcess(tmp_path, {**env, "PIPELINE_API_HEADER_TIMEOUT_S": "1", "PIPELINE_API_BODY_TIMEOUT_S": "1"})
    api.wait_until(ready=True)
    yield api, path, warehouse
    api.stop()


def _timed(call):
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def _metric(base: str, name: str, labels: str) -> float:
    text = get(base, "/metrics")[1]
    series = f"{name}{{{labels}}}" if labels else name
    found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    assert found, f"{series} not in /metrics"
    return float(found.group(1))


# ----- the store stalls, dies, comes back empty


def test_a_paused_redis_gets_fast_503s_and_health_and_metrics_still_answer(redis_api):
    api, redis_server, _ = redis_api
    assert post(api.base, "/recommend/7", BODY)[0] == 200
    redis_server.pause()
    try:
        with concurrent.futures.ThreadPoolExecutor(48) as pool:
            recommendations = [pool.submit(_timed, lambda: post(api.base, "/recommend/7", BODY)) for _ in range(40)]
            healths = [pool.submit(_timed, lambda: get(api.base, "/health")) for _ in range(4)]
            metrics = [pool.submit(_timed, lambda: get(api.base, "/metrics")) for _ in range(4)]
            answers = [f.result() for f in recommendations]
            health_answers, metric_answers = [f.result() for f in healths], [f.result() for f in metrics]
        for (status, body, headers), seconds in answers:
            assert status == 503 and "online store unavailable" in body["error"], body
            assert int(headers["retry-after"]) >= 1 and seconds < 1.0, seconds
        for (status, text), seconds in health_answers:
            assert status == 503 and "unavailable" in json.loads(text)["reason"] and seconds < 1.0
        for (status, _), seconds in metric_answers:
            assert status == 200 and seconds < 1.0
        assert _metric(api.base, "store_available", "") == 0
    finally:
        redis_server.resume()
    # recovery without a restart
    wait_for(lambda: post(api.base, "/recommend/7", BODY)[0] == 200, what="recovery after SIGCONT")
    assert health(api.base)["ready"] and _metric(api.base, "store_available", "") == 1
    assert _metric(api.base, "recommend_requests_total", 'status="503"') >= 40


def test_a_killed_redis_then_an_empty_one_give_json_503s_until_features_are_loaded(redis_api, serving_artifacts):
    api, redis_server, _ = redis_api
    tables = serving_artifacts[1]
    redis_server.kill()
    status, body, headers = post(api.base, "/recommend/7", BODY)
    assert status == 503 and "online store unavailable" in body["error"] and "retry-after" in headers
    assert _metric(api.base, "recommend_requests_total", 'status="503"') >= 1
    redis_server.start()  # same port, empty
    status, body, _ = wait_for(lambda: (a := post(api.base, "/recommend/7", BODY)) and
                                "features not loaded" in a[1]["error"] and a, what="features not loaded")
    assert status == 503
    status, text = get(api.base, "/health")
    assert status == 503 and "features not loaded" in json.loads(text)["reason"]
    store = RedisStore(redis_server.url)
    load_features(store, tables)
    store.close()
    assert post(api.base, "/recommend/7", BODY)[0] == 200
    status, body, _ = post(api.base, "/recommend/99999999", BODY)  # unknown user in a loaded snapshot
    assert status == 404 and body["field"] == "user_id"


def test_a_deleted_sqlite_file_is_not_served_and_a_new_one_is_picked_up(sqlite_api, serving_artifacts):
    api, path, _ = sqlite_api
    tables = serving_artifacts[1]
    before = health(api.base)["store"]["version"]
    path.unlink()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    status, body, _ = post(api.base, "/recommend/7", BODY)
    assert status == 503 and "features not loaded" in body["error"] and "does not exist" in body["error"]
    status, text = get(api.base, "/health")
    assert status == 503 and "features not loaded" in json.loads(text)["reason"]
    replacement = path.with_name("replacement.db")  # built aside, then moved into place
    store = SQLiteStore(replacement)
    load_features(store, tables)
    load_features(store, tables)
    store.close()
    os.replace(replacement, path)
    assert post(api.base, "/recommend/7", BODY)[0] == 200
    assert health(api.base)["store"]["version"] == 2 != before or before == 2


# ----- bad artifacts never serve


def _good_record(version_dir: Path) -> dict:
    record = json.loads((version_dir / RECORD).read_text())
    return {k: record[k] for k in ("feature_versions", "input_width", "probe")}


def test_a_wrong_width_or_corrupt_model_is_rejected_once_and_the_old_one_keeps_serving(redis_api):
    api, _, warehouse = redis_api
    good = health(api.base)["model_version"]
    good_copy = warehouse.root / "good-model"  # publishing two more versions prunes this one from the artifact
    shutil.copytree(Artifact(warehouse.export).version_path(good), good_copy)
    torch.manual_seed(5)
    # an honest export of a model with 30 inputs
    narrow = publish_export(ClickMLP(input_dim=30), warehouse.export, torch.randn(32, 30), record={})
    body = wait_for(lambda: (h := health(api.base))["last_reload_failure"] and h, what="the rejection")
    assert body["last_reload_failure"]["version"] == narrow.version
    assert "input width 30" in body["last_reload_failure"]["reason"] and body["model_version"] == good
    # the same model with a record copied from the good one: it does not take 40 inputs
    forged = write_audit_publish(warehouse.export, lambda staging: shutil.copy(
        narrow.path / MODEL_FILE, staging / MODEL_FILE), lambda staging, _: [], record=_good_record(good_copy))
    wait_for(lambda: health(api.base)["last_reload_failure"]["version"] == forged.version, what="second rejection")
    assert "does not take [16, 40] inputs" in health(api.base)["last_reload_failure"]["reason"]
    # a published version whose model.pt was damaged on disk afterwards
    corrupt = Artifact(warehouse.export).versions_dir / "corrupt-copy"
    shutil.copytree(good_copy, corrupt)
    data = bytearray((corrupt / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (corrupt / MODEL_FILE).write_bytes(bytes(data))
    os.symlink(corrupt, f"{warehouse.export}.tmp-link")
    os.replace(f"{warehouse.export}.tmp-link", warehouse.export)
    wait_for(lambda: health(api.base)["last_reload_failure"]["version"] == "corrupt-copy", what="third rejection")
    status, body, _ = post(api.base, "/recommend/7", BODY)
    assert status == 200 and health(api.base)["model_version"] == good
    assert "crc32" in health(api.base)["last_reload_failure"]["reason"]
    assert _metric(api.base, "artifact_reload_failures_total", 'artifact="model"') == 3
    time.sleep(1.0)  # five more polls of the same rejected version
    log = api.stop()
    for version in (narrow.version, forged.version, "corrupt-copy"):
        assert log.count(f"rejected model version {version}") == 1, log


def test_a_torn_geo_index_is_rejected(redis_api, serving_artifacts):
    api, _, warehouse = redis_api
    tables = serving_artifacts[1]
    good = health(api.base)["geo_index_version"]
    restaurants = tables.restaurant_snapshot
    half = GeoIndex.build(restaurants.ids[::2], restaurants.locations[::2, 0], restaurants.locations[::2, 1])
    other = half.publish(warehouse.geo_index, restaurants.ids[::2])  # a whole, valid index of half the rows
    wait_for(lambda: health(api.base)["geo_index_version"] == other.version, what="the half index")
    # the table of the full index with the lookup of the half one, published with honest checksums
    full_dir = Artifact(warehouse.geo_index).version_path(good)

    def torn(staging: Path) -> None:
        shutil.copy(full_dir / TABLE_FILE, staging / TABLE_FILE)
        shutil.copy(other.path / CELLS_FILE, staging / CELLS_FILE)

    full_record = json.loads((full_dir / RECORD).read_text())
    torn_version = write_audit_publish(warehouse.geo_index, torn, lambda staging, _: [], record={
        key: full_record[key] for key in ("restaurants", "h3_resolution")}).version
    body = wait_for(lambda: (h := health(api.base))["last_reload_failure"] and h, what="the torn index rejected")
    assert body["last_reload_failure"]["artifact"] == "geo_index"
    assert body["last_reload_failure"]["version"] == torn_version
    assert body["geo_index_version"] == other.version and post(api.base, "/recommend/7", BODY)[0] == 200
    assert _metric(api.base, "artifact_reload_failures_total", 'artifact="geo_index"') == 1


# ----- clients: huge, slow, mistyped


def _huge_post(port: int, body: bytes, send_body: bool = True) -> bytes:
    """POST ``body`` over a raw socket and return what the server answered. The server answers
    413 and closes as soon as it sees the Content-Length, so sending may fail half way."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /recommend/7 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body))
        try:
            if send_body:
                sock.sendall(body)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
            return b"".join(chunks)
        except (ConnectionResetError, BrokenPipeError):
            return b"(reset after the answer)"


def test_bodies_over_the_limit_get_413_before_parsing_and_memory_stays_flat(sqlite_api):
    api, _, _ = sqlite_api
    huge = json.dumps({**BODY, "candidate_restaurant_ids": list(range(1_500_000))}).encode()  # ~11.5 MB
    maximal = json.dumps({**BODY, "candidate_restaurant_ids": [2**62 + i for i in range(10_000)]}).encode()
    assert 200_000 < len(maximal) < 262_144 and len(huge) > 11_000_000
    status, body, _ = post(api.base, "/recommend/7", raw=maximal)
    assert status == 200, body
    # refused on its Content-Length alone, before a byte of the body is read
    answer = _huge_post(api.port, huge, send_body=False)
    assert answer.startswith(b"HTTP/1.1 413") and b'"field":"body"' in answer, answer[:300]
    baseline = api.rss_mb()
    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        for _ in range(3):
            valid = [pool.submit(post, api.base, "/recommend/7", None, maximal, 30) for _ in range(32)]
            oversized = [pool.submit(_huge_post, api.port, huge) for _ in range(32)]
            assert [f.result()[0] for f in valid] == [200] * 32
            assert all(f.result().startswith((b"HTTP/1.1 413", b"(reset")) for f in oversized)
    growth = api.rss_mb() - baseline
    assert growth < 40, f"server memory grew by {growth:.0f} MB under 32 concurrent maximal bodies"


def test_slow_clients_are_timed_out_and_do_not_block_others(sqlite_api):
    api, _, _ = sqlite_api
    connections = []
    for i in range(300):  # half-sent requests: headers never finish, or the body never comes
        sock = socket.create_connection(("127.0.0.1", api.port), timeout=10)
        if i % 2:
            sock.sendall(b"POST /recommend/7 HTTP/1.1\r\nHost: x\r\n")
        else:
            sock.sendall(b"POST /recommend/7 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000\r\n\r\n{\"latitude\": 13")
        connections.append(sock)
    started = time.monotonic()
    assert post(api.base, "/recommend/7", BODY)[0] == 200 and time.monotonic() - started < 1
    answers = []
    for sock in connections:
        chunks = []
        while chunk := sock.recv(65536):  # the server closes every one of them
            chunks.append(chunk)
        answers.append(b"".join(chunks))
        sock.close()
    assert time.monotonic() - started < 8
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers), {a[:40] for a in answers}
    assert b"request body not received within 1 s" in answers[0]
    assert b"request headers not received in time" in answers[1]


@pytest.mark.parametrize("path, body, field", [
    ("/recommend/7", {**BODY, "latitude": "13.8"}, "latitude"),
    ("/recommend/7", {**BODY, "latitude": True}, "latitude"),
    ("/recommend/7", {**BODY, "longitude": "100.6"}, "longitude"),
    ("/recommend/7", {**BODY, "max_dist": "5000"}, "max_dist"),
    ("/recommend/7", {**BODY, "max_dist": False}, "max_dist"),
    ("/recommend/7", {**BODY, "size": True}, "size"),
    ("/recommend/%D9%A4%D9%A2", BODY, "user_id"),        # ٤٢: Arabic-Indic digits
    ("/recommend/u%EF%BC%94%EF%BC%92", BODY, "user_id"),  # u４２: full-width digits
    ("/recommend/7", {"latitude": 13.8, "longitude": 100.6, "max_dist": 2_000_000}, "max_dist"),
    ("/recommend/7", {"latitude": 13.8, "longitude": 100.6, "max_dist": 2.1e7}, "max_dist"),
])
def test_types_are_strict_and_retrieval_without_candidates_is_bounded(sqlite_api, path, body, field):
    api, _, _ = sqlite_api
    (status, answer, _), seconds = _timed(lambda: post(api.base, path, body))
    assert (status, answer["field"]) == (422, field), answer
    assert seconds < 0.5
    assert post(api.base, "/recommend/7", {**BODY, "latitude": 13})[0] == 200  # an integer is a number


def test_docs_work_offline_from_locally_served_assets(sqlite_api):
    api, _, _ = sqlite_api
    status, page = get(api.base, "/docs")
    assert status == 200
    sources = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page)
    assert sources and all(s.startswith("/") for s in sources), sources  # nothing from a CDN
    for source in sources:
        status, asset = get(api.base, source)
        assert status == 200 and len(asset) > 1000, source
    assert "openapi" in json.loads(get(api.base, "/openapi.json")[1])


def test_two_workers_serve_and_each_picks_up_a_new_model(serving_artifacts, tmp_path):
    warehouse, env = sqlite_serving(serving_artifacts, tmp_path)
    api = ApiProcess(tmp_path, env, workers=2)
    try:
        api.wait_until(ready=True)

        def versions_by_worker() -> dict[int, str]:
            # concurrent requests on new connections: while one worker is busy the other accepts
            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                answers = list(pool.map(lambda _: health(api.base), range(96)))
            return {a["pid"]: a["model_version"] for a in answers}

        wait_for(lambda: len(versions_by_worker()) == 2, timeout_s=30, what="answers from both workers")
        torch.manual_seed(11)
        model = ClickMLP()
        sample = torch.randn(64, 40)
        new = publish_export(model, warehouse.export, sample, record={})
        wait_for(lambda: (seen := versions_by_worker()) and len(seen) == 2 and set(seen.values()) == {new.version},
                  what="both workers on the new model")
        assert post(api.base, "/recommend/7", BODY)[0] == 200
    finally:
        log = api.stop()
    assert "Serving on http://127.0.0.1" in log and "2 workers" in log


def test_an_unexpected_exception_is_a_json_500_counted_by_status(serving_artifacts, tmp_path):
    """The app in this process on a real uvicorn server, with a scorer that raises."""
    source, tables, _, _ = serving_artifacts
    warehouse = copy_warehouse(source, tmp_path / "warehouse")
    store = SQLiteStore(tmp_path / "features.db")
    load_features(store, tables)
    artifacts = Artifacts(warehouse, store, poll_interval_s=0.2)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(artifacts), port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: artifacts.ready and server.started, what="the in-process server")
        assert post(base, "/recommend/7", BODY)[0] == 200

        def broken(x):
            raise RuntimeError("injected")

        artifacts.recommender.scorer.probabilities = broken
        status, body, _ = post(base, "/recommend/7", BODY)
        assert status == 500 and body["error"].startswith("internal error (RuntimeError)")
        assert _metric(base, "recommend_requests_total", 'status="500"') == 1
        assert _metric(base, "recommend_requests_total", 'status="200"') == 1
    finally:
        server.should_exit = True
        thread.join(timeout=10)
