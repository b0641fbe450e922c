"""A recommendation request, its bounds, and the check of them for callers that build requests
themselves.

The bounds are defined here once. The HTTP API declares them in its request schema
(``pipeline/api/schemas.py``), which rejects a request breaking one before it reaches the
recommender; :meth:`Request.validate` applies the same bounds to a request built in Python
(:meth:`Recommender.recommend <pipeline.serving.recommender.Recommender.recommend>`). What depends
on the geo index (how many restaurants a search without candidates may examine and return) is
checked by the recommender's plan for every caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LATITUDE_RANGE = (-90, 90)
LONGITUDE_RANGE = (-180, 180)
MAX_SIZE = 2**31 - 1
MAX_DIST_M = 2.1e7               # above half the Earth's circumference: every restaurant
MAX_CANDIDATES = 10_000


class RequestError(ValueError):
    """An invalid request; ``field`` names the offending field."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass(frozen=True)
class Request:
    user_id: int
    latitude: float
    longitude: float
    candidate_restaurant_ids: tuple[int, ...] | None = None
    size: int = 20
    max_dist: float = 5000.0
    sort_dist: bool = False

    def validate(self) -> None:
        """Raise :class:`RequestError` naming the first field outside its bounds."""
        for name, value, (low, high) in (("latitude", self.latitude, LATITUDE_RANGE),
                                         ("longitude", self.longitude, LONGITUDE_RANGE)):
            if not low <= value <= high or math.isnan(value):
                raise RequestError(name, f"must be within [{low:g}, {high:g}], got {value}")
        if not 0 < self.size <= MAX_SIZE:
            raise RequestError("size", f"must be within [1, {MAX_SIZE}], got {self.size}")
        if not 0 <= self.max_dist <= MAX_DIST_M:
            raise RequestError("max_dist", f"must be a number within [0, {MAX_DIST_M:g}], got {self.max_dist}")
        if self.candidate_restaurant_ids is not None and len(self.candidate_restaurant_ids) > MAX_CANDIDATES:
            raise RequestError("candidate_restaurant_ids",
                               f"at most {MAX_CANDIDATES} ids, got {len(self.candidate_restaurant_ids)}")
