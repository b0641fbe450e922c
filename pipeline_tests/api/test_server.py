"""``pipeline serve``: two workers serve and each picks up a new model, every worker gets the parsed
settings, and every log line is masked."""

from __future__ import annotations

import concurrent.futures
import pickle
import urllib.parse

import torch

from pipeline.model.export import publish_export
from pipeline.model.network import ClickMLP
from pipeline.settings import load_settings
from pipeline_devtools.api_process import BODY, ApiProcess, health, post, sqlite_serving, wait_for
from pipeline_devtools.leaks import PASSWORD, checked


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


def test_serve_hands_the_parsed_settings_to_every_worker():
    """uvicorn pickles its configuration into each worker process: the settings travel with it, and the
    worker's app factory is bound to them (nothing is written to the environment for the workers)."""
    from pipeline.api.server import _ServerConfig, build_app

    settings = load_settings({"PIPELINE_API_POLL_INTERVAL_S": "7", "PIPELINE_API_TOKEN": "t" * 16})
    config = pickle.loads(pickle.dumps(_ServerConfig(settings, workers=2)))
    factory = config.load_app()
    assert factory.func is build_app and factory.args == (settings,)
    assert config.app == "pipeline.api.server:build_app" and config.factory


def test_pipeline_serve_masks_credentials_in_every_log_line(monkeypatch, tmp_path, caplog):
    """The app factory of ``pipeline serve`` puts the redacting filter on the handlers of the root and
    uvicorn loggers: a message or a traceback naming the URL is logged masked."""
    import logging

    from pipeline.api.server import build_app
    from pipeline.redaction import RedactingFilter

    monkeypatch.setenv("PIPELINE_WAREHOUSE_DIR", str(tmp_path / "warehouse"))
    monkeypatch.setenv("PIPELINE_ONLINE_STORE", "sqlite")
    monkeypatch.setenv("PIPELINE_SQLITE_PATH", str(tmp_path / "online" / "features.db"))
    level = logging.getLogger().level
    try:
        build_app()
        url = f"redis://:{urllib.parse.quote(PASSWORD, safe='')}@10.0.0.5:6379/0"
        with caplog.at_level(logging.INFO):
            logging.getLogger("uvicorn.error").error("cannot reach %s", url)
            try:
                raise ConnectionError(f"lost {url}")
            except ConnectionError:
                logging.getLogger("pipeline.api").exception("store failed")
    finally:
        logging.getLogger().setLevel(level)
    assert all(any(isinstance(f, RedactingFilter) for f in h.filters) for h in logging.getLogger().handlers)
    assert "cannot reach redis://:***@10.0.0.5:6379/0" in caplog.text and "lost redis://:***@" in caplog.text
    checked("the server's log lines", caplog.text)
