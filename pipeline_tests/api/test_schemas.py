"""The request schema: it refuses and accepts exactly what the request's bounds do, and a real server
answers a mistyped field 422 naming it, fast."""

from __future__ import annotations

import pydantic
import pytest

from pipeline.api.schemas import RecommendBody
from pipeline.serving.request import MAX_CANDIDATES, MAX_DIST_M, MAX_SIZE, Request, RequestError
from pipeline_devtools.api_process import BODY, post, timed

GOOD = {"latitude": 13.8, "longitude": 100.6, "candidate_restaurant_ids": [1, 2], "size": 20, "max_dist": 5000.0}


@pytest.mark.parametrize("field, value", [
    ("latitude", 90.5), ("latitude", -90.5), ("latitude", float("nan")), ("longitude", 180.5),
    ("longitude", -180.5), ("size", 0), ("size", MAX_SIZE + 1), ("max_dist", -1.0), ("max_dist", MAX_DIST_M * 2),
    ("max_dist", float("inf")), ("candidate_restaurant_ids", list(range(MAX_CANDIDATES + 1))),
])
def test_the_schema_and_the_request_refuse_the_same_values(field, value):
    with pytest.raises(pydantic.ValidationError) as schema_error:
        RecommendBody(**{**GOOD, field: value})
    assert schema_error.value.errors()[0]["loc"][0] == field
    body = {**GOOD, field: value}
    with pytest.raises(RequestError) as request_error:
        Request(1, body["latitude"], body["longitude"], tuple(body["candidate_restaurant_ids"]), body["size"],
                body["max_dist"]).validate()
    assert request_error.value.field == field


@pytest.mark.parametrize("field, value", [("latitude", 90.0), ("longitude", -180.0), ("size", MAX_SIZE),
                                          ("max_dist", 0.0), ("max_dist", MAX_DIST_M),
                                          ("candidate_restaurant_ids", list(range(MAX_CANDIDATES)))])
def test_the_schema_and_the_request_accept_the_bounds_themselves(field, value):
    body = RecommendBody(**{**GOOD, field: value})
    body.request("u42").validate()
    assert body.request("u42").user_id == 42


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
    (status, answer, _), seconds = timed(lambda: post(api.base, path, body))
    assert (status, answer["field"]) == (422, field), answer
    assert seconds < 0.5
    assert post(api.base, "/recommend/7", {**BODY, "latitude": 13})[0] == 200  # an integer is a number
