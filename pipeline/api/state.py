"""What the routes, the error handlers and the lifespan of one app share, kept in ``app.state.api``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import Request

from pipeline.api.artifacts import Artifacts
from pipeline.api.auth import ApiToken
from pipeline.api.limits import ApiLimits
from pipeline.api.metrics import ApiMetrics
from pipeline.api.request_ids import RequestIds
from pipeline.feedback.log_writer import ImpressionLog
from pipeline.serving.breaker import Breaker


@dataclass(frozen=True)
class ApiState:
    artifacts: Artifacts
    limits: ApiLimits
    token: ApiToken
    breaker: Breaker
    metrics: ApiMetrics
    request_ids: RequestIds
    log: ImpressionLog | None  # None: logging is off

    @property
    def root(self) -> Path:
        """The warehouse root: paths under it are never named in an answer."""
        return self.artifacts.warehouse.root


def api_state(request: Request) -> ApiState:
    """The state of the app serving ``request``."""
    return request.app.state.api
