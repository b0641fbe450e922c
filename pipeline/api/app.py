"""``POST /recommend/{user_id}``, ``GET /health``, ``GET /metrics``, offline ``/docs`` (Swagger UI).

The request and response are the reference's (:mod:`pipeline.api.schemas`). Every error is a JSON
body naming the field where there is one (:mod:`pipeline.api.errors`): malformed JSON → 400; a
missing, mistyped or out-of-range field → 422 (types are strict: no strings or booleans for
numbers, ASCII digits in ``user_id``); unknown user → 404; body too large → 413; body too slow →
408; no model, geo index or live features, or the store unavailable → 503 with ``Retry-After``;
anything unexpected → 500. ``/metrics`` counts every ``/recommend`` answer by status, over all
workers (:mod:`pipeline.api.metrics`). After SIGTERM ``/health`` answers 503 "draining" while
requests are still served (:mod:`pipeline.api.drain`).

The event loop never waits on the store: the store read is awaited (Redis through its asyncio
client, SQLite on a worker thread) under a deadline, every store call has its own timeout, and
a :class:`~pipeline.serving.breaker.Breaker` refuses requests at once while the store is known to
be down (probing it again after a cool-down), so ``/health`` and ``/metrics`` answer at once
whatever the store does (:mod:`pipeline.api.routes`, :mod:`pipeline.api.store_reads`).

Every ``/recommend`` answer carries ``X-Request-Id``; with the impression log on, each answered
one is queued for the log and published by a background writer, never waited on
(:mod:`pipeline.feedback.log_writer`).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from fastapi_offline import FastAPIOffline

from pipeline.api.artifacts import Artifacts
from pipeline.api.auth import ApiToken
from pipeline.api.errors import install_error_handlers
from pipeline.api.json_body import OrjsonRoute
from pipeline.api.lifecycle import lifespan
from pipeline.api.limits import ApiLimits, BoundedBody
from pipeline.api.metrics import ApiMetrics, CountRecommendations
from pipeline.api.request_ids import RequestIds
from pipeline.api.routes import health, metrics, recommend
from pipeline.api.schemas import ErrorBody, RecommendResponse
from pipeline.api.state import ApiState
from pipeline.feedback.log_writer import ImpressionLog
from pipeline.serving.breaker import Breaker

ERROR_STATUSES = (400, 401, 404, 408, 413, 422, 503)


def create_app(artifacts: Artifacts, limits: ApiLimits | None = None, api_token: str = "",
               impression_log: ImpressionLog | None = None) -> FastAPI:
    """The app; with ``api_token``, /recommend needs it and /health without it says only whether it
    is ready; with ``impression_log``, every answered /recommend is logged to it."""
    limits = limits or ApiLimits()
    breaker = Breaker(limits.cooldown_s)
    api = ApiState(artifacts, limits, ApiToken(api_token), breaker, ApiMetrics(artifacts, breaker, impression_log),
                   RequestIds(impression_log.token if impression_log else None), impression_log)

    # Swagger UI only: ReDoc's page still fetches its logo from a CDN
    app = FastAPIOffline(title="Restaurant recommendations", version="1", lifespan=lifespan, redoc_url=None)
    app.state.api = api
    app.add_middleware(BoundedBody, max_bytes=limits.max_body_bytes, timeout_s=limits.body_timeout_s)
    app.add_middleware(CountRecommendations, requests=api.metrics.requests, latency=api.metrics.latency)
    install_error_handlers(app)
    app.router.add_api_route("/recommend/{user_id}", recommend, methods=["POST"], response_model=RecommendResponse,
                             dependencies=api.token.required(), route_class_override=OrjsonRoute,
                             responses={code: {"model": ErrorBody} for code in ERROR_STATUSES})
    app.add_api_route("/health", health, methods=["GET"], dependencies=api.token.declared())
    app.add_api_route("/metrics", metrics, methods=["GET"], response_class=PlainTextResponse)
    return app
