"""Request ids: the caller's ``X-Request-Id`` when it sends a valid one, else one made here.

A made id is this worker's random token and a counter (``3f9a0c1e-1a``): unique across workers
and restarts without a lookup, and cheaper than a UUID per request.
"""

from __future__ import annotations

import itertools
import secrets

from pipeline.feedback.log_format import REQUEST_ID

HEADER = "x-request-id"


class RequestIds:
    def __init__(self, token: str | None = None):
        self.token = token or secrets.token_hex(4)
        self._next = itertools.count(1)

    def make(self) -> str:
        return f"{self.token}-{next(self._next):x}"

    @staticmethod
    def valid(request_id: str) -> bool:
        return REQUEST_ID.match(request_id) is not None
