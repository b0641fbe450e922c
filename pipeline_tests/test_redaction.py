"""The one redaction (pipeline/redaction.py) and the public form of HTTP bodies (pipeline/api/public.py)."""

from __future__ import annotations

import io
import logging

import pytest

from pipeline.api.public import public_text, public_value
from pipeline.redaction import MASK, RedactingFilter, install_log_redaction, redact, redact_value, register_secret
from pipeline.store.redis_connection import celery_ssl_options, client_options, display_url


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


def test_public_text_names_warehouse_paths_relative_and_hides_other_absolute_paths(tmp_path):
    root = tmp_path / "warehouse"
    text = (f"FileNotFoundError: [Errno 2] No such file or directory: "
            f"'{root}/models/click_model/export.versions/v1/model.pt'; sqlite /srv/online/features.db: locked; "
            f"redis://:pw-1234@h:1/0 rate 3/4")
    assert public_text(text, root) == (
        "FileNotFoundError: [Errno 2] No such file or directory: 'models/click_model/export.versions/v1/model.pt'; "
        "sqlite features.db: locked; redis://:***@h:1/0 rate 3/4")
    assert public_value({"reason": [f"{root}/geo/index"], "n": 1}, root) == {"reason": ["geo/index"], "n": 1}
