"""An unexpected exception is a JSON 500, counted by status (the app on a real uvicorn server)."""

from __future__ import annotations

import threading

import uvicorn

from pipeline.api.app import create_app
from pipeline.api.artifacts import Artifacts
from pipeline.store.sqlite import SQLiteStore
from pipeline_devtools.api_process import BODY, load_features, metric, post, wait_for
from pipeline_devtools.published_copies import copy_warehouse
from pipeline_devtools.redis_server import free_port


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

        def broken(user, restaurants):
            raise RuntimeError("injected")

        artifacts.recommender.scorer.probabilities_for_user = broken
        status, body, _ = post(base, "/recommend/7", BODY)
        assert status == 500 and body["error"].startswith("internal error (RuntimeError)")
        assert metric(base, "recommend_requests_total", 'status="500"') == 1
        assert metric(base, "recommend_requests_total", 'status="200"') == 1
    finally:
        server.should_exit = True
        thread.join(timeout=10)
