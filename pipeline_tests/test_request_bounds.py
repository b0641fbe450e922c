"""A request's bounds are defined once (pipeline/serving/request.py): the API's schema refuses
exactly what Request.validate refuses, naming the same field."""

import pydantic
import pytest

from pipeline.api.schemas import RecommendBody
from pipeline.serving.request import MAX_CANDIDATES, MAX_DIST_M, MAX_SIZE, Request, RequestError

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
