"""The API as operators meet a failing store: it stalls, dies, comes back empty, its file vanishes. Each
case runs a real ``pipeline serve`` process against a real redis-server or SQLite file."""

from __future__ import annotations

import concurrent.futures
import json
import os
from pathlib import Path

from pipeline.store.redis_store import RedisStore
from pipeline.store.sqlite import SQLiteStore
from pipeline_devtools.api_process import BODY, get, health, load_features, metric, post, timed, wait_for


def test_a_paused_redis_gets_fast_503s_and_health_and_metrics_still_answer(redis_api):
    api, redis_server, _ = redis_api
    assert post(api.base, "/recommend/7", BODY)[0] == 200
    redis_server.pause()
    try:
        with concurrent.futures.ThreadPoolExecutor(48) as pool:
            recommendations = [pool.submit(timed, lambda: post(api.base, "/recommend/7", BODY)) for _ in range(40)]
            healths = [pool.submit(timed, lambda: get(api.base, "/health")) for _ in range(4)]
            metrics = [pool.submit(timed, lambda: get(api.base, "/metrics")) for _ in range(4)]
            answers = [f.result() for f in recommendations]
            health_answers, metric_answers = [f.result() for f in healths], [f.result() for f in metrics]
        for (status, body, headers), seconds in answers:
            assert status == 503 and "online store unavailable" in body["error"], body
            assert int(headers["retry-after"]) >= 1 and seconds < 1.0, seconds
        for (status, text), seconds in health_answers:
            assert status == 503 and "unavailable" in json.loads(text)["reason"] and seconds < 1.0
        for (status, _), seconds in metric_answers:
            assert status == 200 and seconds < 1.0
        assert metric(api.base, "store_available", "") == 0
    finally:
        redis_server.resume()
    # recovery without a restart
    wait_for(lambda: post(api.base, "/recommend/7", BODY)[0] == 200, what="recovery after SIGCONT")
    assert health(api.base)["ready"] and metric(api.base, "store_available", "") == 1
    assert metric(api.base, "recommend_requests_total", 'status="503"') >= 40


def test_a_killed_redis_then_an_empty_one_give_json_503s_until_features_are_loaded(redis_api, serving_artifacts):
    api, redis_server, _ = redis_api
    tables = serving_artifacts[1]
    redis_server.kill()
    status, body, headers = post(api.base, "/recommend/7", BODY)
    assert status == 503 and "online store unavailable" in body["error"] and "retry-after" in headers
    assert metric(api.base, "recommend_requests_total", 'status="503"') >= 1
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
