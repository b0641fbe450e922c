"""The API's request, response and error bodies, and the ``user_id`` path parameter.

Types are strict (no strings or booleans for numbers) and the bounds are the request's
(:mod:`pipeline.serving.request`): a request that breaks one is answered 422 before it reaches
the recommender.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt

from pipeline.serving.recommender import MAX_DIST_WITHOUT_CANDIDATES_M
from pipeline.serving.request import LATITUDE_RANGE, LONGITUDE_RANGE, MAX_CANDIDATES, MAX_DIST_M, MAX_SIZE, Request

INT64 = Field(ge=-(2**63), le=2**63 - 1)
USER_ID = r"^u?[0-9]{1,18}$"
UserId = Annotated[str, Path(max_length=19, pattern=USER_ID, description="u00042 or 42 (ASCII digits)")]


class RecommendBody(BaseModel):
    """The reference request body."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [
        {"candidate_restaurant_ids": [17, 523, 1200, 5044, 9031], "latitude": 13.8, "longitude": 100.6,
         "size": 20, "max_dist": 5000, "sort_dist": False}]})
    candidate_restaurant_ids: list[Annotated[StrictInt, INT64]] | None = Field(
        default=None, max_length=MAX_CANDIDATES,
        description=f"Restaurants to rank (at most {MAX_CANDIDATES}); absent: every restaurant within max_dist "
                    f"(then max_dist ≤ {MAX_DIST_WITHOUT_CANDIDATES_M:.0f} m and at most {MAX_CANDIDATES} "
                    "restaurants within it).")
    latitude: StrictFloat = Field(ge=LATITUDE_RANGE[0], le=LATITUDE_RANGE[1], allow_inf_nan=False)
    longitude: StrictFloat = Field(ge=LONGITUDE_RANGE[0], le=LONGITUDE_RANGE[1], allow_inf_nan=False)
    size: StrictInt = Field(default=20, gt=0, le=MAX_SIZE)
    max_dist: StrictFloat = Field(default=5000, ge=0, le=MAX_DIST_M, allow_inf_nan=False,
                                  description="metres, great-circle")
    sort_dist: StrictBool = False

    def request(self, user_id: str) -> Request:
        """The recommender's request for ``user_id`` (its ``u`` prefix removed)."""
        candidates = tuple(self.candidate_restaurant_ids) if self.candidate_restaurant_ids is not None else None
        return Request(int(user_id.removeprefix("u")), self.latitude, self.longitude, candidates, self.size,
                       self.max_dist, self.sort_dist)


class Restaurant(BaseModel):
    id: int
    score: float
    displacement: float


class RecommendResponse(BaseModel):
    restaurants: list[Restaurant]


class ErrorBody(BaseModel):
    error: str
    field: str | None = None
    detail: list[dict] | None = None
