"""The optional API token (PIPELINE_API_TOKEN) on a real ``pipeline serve`` process."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

import pytest

from pipeline.api.auth import ApiToken
from pipeline_devtools.api_process import BODY, ApiProcess, get, sqlite_serving

TOKEN = "api-Token-5b1c9e7d2f40a6"


def _request(base: str, method: str, path: str, authorization: str | None = None,
             body: dict | None = None) -> tuple[int, dict, dict]:
    headers = {"Content-Type": "application/json", **({"Authorization": authorization} if authorization else {})}
    request = urllib.request.Request(base + path, method=method, headers=headers,
                                     data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, text, answer_headers = response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        status, text, answer_headers = error.code, error.read(), error.headers
    return status, json.loads(text), {k.lower(): v for k, v in answer_headers.items()}


def test_a_short_token_is_refused_and_the_token_is_masked_in_messages():
    with pytest.raises(ValueError, match="at least 16 characters"):
        ApiToken("short-token")
    token = ApiToken("registered-Token-77aa31")
    from pipeline.redaction import redact

    assert "registered-Token-77aa31" not in redact("header was registered-Token-77aa31")
    assert token.sent_by("Bearer registered-Token-77aa31") and token.sent_by("bearer registered-Token-77aa31")
    assert not token.sent_by("Bearer registered-Token-77aa3") and not token.sent_by("Basic registered-Token-77aa31")
    assert not token.sent_by(None) and ApiToken("").sent_by(None)


@pytest.mark.slow
def test_recommend_needs_the_token_and_health_without_it_says_only_ready(serving_artifacts, tmp_path):
    _, env = sqlite_serving(serving_artifacts, tmp_path)
    api = ApiProcess(tmp_path, {**env, "PIPELINE_API_TOKEN": TOKEN})
    try:
        assert api.wait_until(ready=True) == {"ready": True}  # no token: nothing but readiness
        status, full, _ = _request(api.base, "GET", "/health", f"Bearer {TOKEN}")
        assert status == 200 and full["ready"] and full["model_version"] and full["store"]["version"] == 1
        for authorization in (None, "Bearer wrong-token-0000000000", f"Basic {TOKEN}", f"Bearer {TOKEN}x"):
            for _ in range(5):  # many refusals: the store breaker must not count them
                status, body, headers = _request(api.base, "POST", "/recommend/7", authorization, BODY)
                assert status == 401 and headers["www-authenticate"] == "Bearer" and "error" in body, body
        assert re.search(r'^store_available 1\.0$', get(api.base, "/metrics")[1], re.MULTILINE)
        status, body, _ = _request(api.base, "POST", "/recommend/7", f"Bearer {TOKEN}", BODY)
        assert status == 200 and body["restaurants"], body
        openapi = json.loads(get(api.base, "/openapi.json")[1])
        assert openapi["components"]["securitySchemes"]["bearer"] == {
            "type": "http", "scheme": "bearer", "description": "PIPELINE_API_TOKEN, as Authorization: Bearer <token>"}
        assert openapi["paths"]["/recommend/{user_id}"]["post"]["security"] == [{"bearer": []}]
        assert "401" in openapi["paths"]["/recommend/{user_id}"]["post"]["responses"]
    finally:
        log = api.stop()
    assert TOKEN not in log
