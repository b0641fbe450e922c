"""Secrets never leave the process: what the redaction masks, its logging filter, and a real ``pipeline
serve`` and the real ``pipeline`` command against a real redis-server started with a password, every
output searched for it while the server is up, paused (stalled) and killed."""

from __future__ import annotations

import io
import logging

import pytest

from pipeline.redaction import MASK, RedactingFilter, install_log_redaction, redact, redact_value, register_secret
from pipeline.store.redis_store import RedisStore
from pipeline_devtools.api_process import ApiProcess, get, load_features, post
from pipeline_devtools.commands import pipeline_command
from pipeline_devtools.leaks import checked
from pipeline_devtools.published_copies import copy_warehouse


@pytest.mark.parametrize(("text", "expected"), [
    ("redis://:hunter2@10.0.0.5:6379/0", "redis://:***@10.0.0.5:6379/0"),
    ("redis://alice:hunter2@redis:6379/0", "redis://alice:***@redis:6379/0"),
    ("rediss://alice:p%40ss%2Fw@redis:6380/1", "rediss://alice:***@redis:6380/1"),
    ("error at redis://:x@h:1/0 and amqp://u:y@h/vhost", "error at redis://:***@h:1/0 and amqp://u:***@h/vhost"),
    ("https://api.example/v1?key=abc123&page=2", "https://api.example/v1?key=***&page=2"),
    ("postgresql://h/db?sslmode=require&password=abc", "postgresql://h/db?sslmode=require&password=***"),
    ("Authorization: Bearer eyJhbGciOi.abc-def_1", "Authorization: Bearer ***"),
    ("redis://127.0.0.1:6379/0 and /srv/data:ro", "redis://127.0.0.1:6379/0 and /srv/data:ro"),  # nothing secret
    ("user@example.com wrote: a:b@c", "user@example.com wrote: a:b@c"),  # no scheme: not a URL
])
def test_redact_masks_credentials_in_urls_queries_and_bearer_tokens(text, expected):
    assert redact(text) == expected


def test_registered_secrets_are_masked_anywhere_and_short_values_are_not_registered():
    register_secret("tok-9f8e7d6c5b4a")
    register_secret("ab")  # too short: would mask ordinary words
    assert redact("sent tok-9f8e7d6c5b4a to ab") == f"sent {MASK} to ab"
    assert redact_value({"a": ["x tok-9f8e7d6c5b4a", 3], "b": ("redis://:pw12@h",)}) == \
        {"a": [f"x {MASK}", 3], "b": ("redis://:***@h",)}


def test_the_logging_filter_masks_messages_arguments_and_tracebacks():
    stream = io.StringIO()
    logger = logging.getLogger("pipeline.test_redaction")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        install_log_redaction(logger)
        install_log_redaction(logger)  # idempotent
        assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
        logger.warning("connecting to %s", "redis://:s3cr3t-a@h:1/0")
        try:
            raise ConnectionError("redis://u:s3cr3t-b@h:1/0 refused")
        except ConnectionError:
            logger.exception("store failed")
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert "redis://:***@h:1/0" in output and "redis://u:***@h:1/0 refused" in output
    assert "s3cr3t" not in output


BODY = {"candidate_restaurant_ids": list(range(0, 200, 7)), "latitude": 13.8, "longitude": 100.6, "max_dist": 20000}


@pytest.mark.slow
def test_the_redis_password_appears_in_no_http_body_cli_output_or_log(serving_artifacts, password_redis, tmp_path):
    source, tables, _, _ = serving_artifacts
    warehouse = copy_warehouse(source, tmp_path / "warehouse")
    env = {"PIPELINE_WAREHOUSE_DIR": str(warehouse.root), "REDIS_URL": password_redis.url,
           "PIPELINE_ONLINE_STORE": "redis"}

    def pipeline(where: str, *args: str) -> tuple[int, str]:
        code, output = pipeline_command(env, *args)
        return code, checked(where, output)

    store = RedisStore(password_redis.url)
    load_features(store, tables)
    code, output = pipeline("rollback features with nothing kept", "rollback", "features")
    assert code == 1 and "no previous version" in output, output
    load_features(store, tables)
    store.close()
    code, output = pipeline("status, server up", "status")
    assert code == 0 and '"online_store"' in output, output
    code, output = pipeline("rollback features", "rollback", "features")
    assert code == 0 and '"from": 2, "to": 1' in output, output

    api = ApiProcess(tmp_path, env)
    try:
        api.wait_until(ready=True)
        checked("/health, server up", get(api.base, "/health")[1])
        assert post(api.base, "/recommend/7", BODY)[0] == 200
        password_redis.pause()  # stalled: reads time out
        try:
            status, body, _ = post(api.base, "/recommend/7", BODY)
            checked("the 503 body, server paused", str(body))
            assert status == 503 and "online store unavailable" in body["error"], body
            checked("the 503 body, breaker open", str(post(api.base, "/recommend/7", BODY)[1]))
            status, text = get(api.base, "/health")
            checked("/health, server paused", text)
            assert status == 503 and "unavailable" in text
        finally:
            password_redis.resume()
        password_redis.kill()  # stopped: connections refused
        code, output = pipeline("status, server down", "status")
        assert code == 1 and "redis redis://:***@127.0.0.1" in output, output
        code, output = pipeline("rollback features, server down", "rollback", "features")
        assert code == 1 and "redis://:***@" in output, output
        status, body, _ = post(api.base, "/recommend/7", BODY)
        checked("the 503 body, server killed", str(body))
        assert status == 503 and "redis://:***@127.0.0.1" in body["error"], body
        status, text = get(api.base, "/health")
        checked("/health, server killed", text)
        assert status == 503 and "redis://:***@127.0.0.1" in text
    finally:
        log = api.stop()
    checked("the server log", log)
