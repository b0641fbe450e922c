"""``POST /recommend/{user_id}``, ``GET /health``, ``GET /metrics``, offline ``/docs`` (Swagger UI).

The request and response are the reference's. Every error is a JSON body naming the field where
there is one: malformed JSON → 400; a missing, mistyped or out-of-range field → 422 (types are
strict: no strings or booleans for numbers, ASCII digits in ``user_id``); unknown user → 404;
body too large → 413; body too slow → 408; no model, geo index or live features, or the store
unavailable → 503 with ``Retry-After``; anything unexpected → 500. ``/metrics`` counts every
``/recommend`` answer by status, over all workers (``pipeline/api/metrics.py``). After SIGTERM
``/health`` answers 503 "draining" while requests are still served (``pipeline/api/drain.py``).

The event loop never waits on the store: the store read is awaited (Redis through its asyncio
client, SQLite on a worker thread) under a deadline, every store call has its own timeout, and
a :class:`Breaker` refuses requests at once while the store is known to be down (probing it
again after a cool-down), so ``/health`` and ``/metrics`` answer at once whatever the store does.
Filtering and scoring (~0.1–1 ms of CPU) run in the loop: a thread hop per request would cost
more than it frees.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Annotated

import orjson
from fastapi import FastAPI, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.api.artifacts import Artifacts
from pipeline.api.auth import ApiToken
from pipeline.api.drain import DRAIN
from pipeline.api.limits import ApiLimits, BoundedBody
from pipeline.api.metrics import ApiMetrics
from pipeline.api.public import public_text, public_value
from pipeline.serving.breaker import Breaker
from pipeline.serving.recommender import MAX_CANDIDATES, MAX_DIST_WITHOUT_CANDIDATES_M, RequestError, UnknownUser
from pipeline.serving.recommender import Request as Recommendation
from pipeline.store.base import FeaturesNotLoaded, StoreUnavailable

INT64 = Field(ge=-(2**63), le=2**63 - 1)
USER_ID = r"^u?[0-9]{1,18}$"


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
    latitude: StrictFloat = Field(ge=-90, le=90, allow_inf_nan=False)
    longitude: StrictFloat = Field(ge=-180, le=180, allow_inf_nan=False)
    size: StrictInt = Field(default=20, gt=0, le=2**31 - 1)
    max_dist: StrictFloat = Field(default=5000, ge=0, le=2.1e7, allow_inf_nan=False,
                                  description="metres, great-circle")
    sort_dist: StrictBool = False


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


def _field(loc: tuple) -> str:
    parts = [str(p) for p in loc if p not in ("body", "path", "query")]
    return ".".join(parts) or "body"


class _CountRecommendations:
    """Counts every ``/recommend`` answer by status and times it, whatever produced it (the
    handler, validation, the body limits, or an exception that escaped: counted as 500)."""

    def __init__(self, app: ASGIApp, requests: Counter, latency: Histogram):
        self.app, self.requests, self.latency = app, requests, latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/recommend/"):
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), []

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        except Exception:
            status.append(500)
            raise
        finally:
            self.requests.labels(str(status[0] if status else 500)).inc()
            self.latency.observe(time.perf_counter() - started)


def create_app(artifacts: Artifacts, limits: ApiLimits | None = None, api_token: str = "") -> FastAPI:
    """The app; with ``api_token``, /recommend needs it and /health without it says only whether it is ready."""
    limits = limits or ApiLimits()
    token = ApiToken(api_token)
    root = artifacts.warehouse.root
    breaker = Breaker(limits.cooldown_s)
    api_metrics = ApiMetrics(artifacts, breaker)

    async def refresh_metrics() -> None:
        while True:
            api_metrics.refresh()
            await asyncio.sleep(artifacts.poll_interval_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        artifacts.start()
        DRAIN.install(limits.drain_s)
        refresher = asyncio.create_task(refresh_metrics())
        yield
        refresher.cancel()
        api_metrics.close()
        await artifacts.store.close_async()
        artifacts.stop()

    # Swagger UI only: ReDoc's page still fetches its logo from a CDN
    app = FastAPIOffline(title="Restaurant recommendations", version="1", lifespan=lifespan, redoc_url=None)
    app.add_middleware(BoundedBody, max_bytes=limits.max_body_bytes, timeout_s=limits.body_timeout_s)
    app.add_middleware(_CountRecommendations, requests=api_metrics.requests, latency=api_metrics.latency)

    def error(status: int, message: str, field: str | None = None, detail=None,
              retry_after: int | None = None, headers: dict | None = None) -> JSONResponse:
        body = {"error": public_text(message, root), **({"field": field} if field else {}),
                **({"detail": detail} if detail else {})}
        headers = {**(headers or {}), **({"Retry-After": str(retry_after)} if retry_after else {})}
        return JSONResponse(body, status_code=status, headers=headers or None)

    async def from_store(call):
        """Await ``call`` (a store read) within the deadline; the breaker learns whether the store answered."""
        try:
            result = await asyncio.wait_for(call, limits.deadline_s)
        except TimeoutError:
            breaker.failed(f"no answer within {limits.deadline_s:g} s")
            raise StoreUnavailable(breaker.last_error) from None
        except StoreUnavailable as unavailable:
            breaker.failed(str(unavailable))
            raise
        except FeaturesNotLoaded:
            breaker.succeeded()  # the store answered
            raise
        breaker.succeeded()
        return result

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [{"field": _field(e["loc"]), "message": e["msg"]} for e in exc.errors()]
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            return error(400, "malformed JSON", "body")
        return error(422, f"invalid {problems[0]['field']}: {problems[0]['message']}", problems[0]["field"], problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # a body that cannot be decoded (400), too large (413) or too slow (408); an unknown path or method
        return error(exc.status_code, str(exc.detail), "body" if exc.status_code in (400, 408, 413) else None,
                     headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # the traceback is logged by the server; the client gets JSON, never a bare text 500
        return error(500, f"internal error ({type(exc).__name__}); the server log has the details")

    @app.post("/recommend/{user_id}", response_model=RecommendResponse, dependencies=token.required(),
              responses={code: {"model": ErrorBody} for code in (400, 401, 404, 408, 413, 422, 503)})
    async def recommend(user_id: Annotated[str, Path(max_length=19, pattern=USER_ID,
                                                     description="u00042 or 42 (ASCII digits)")],
                        body: RecommendBody) -> Response:
        """Restaurants within ``max_dist`` of the point, scored for the user, best first."""
        recommender = artifacts.recommender
        if recommender is None:
            return error(503, f"not ready: {artifacts.not_ready_reason()}", retry_after=1)
        if not breaker.allow():
            return error(503, f"online store unavailable: {breaker.last_error}", retry_after=breaker.retry_after_s)
        candidates = tuple(body.candidate_restaurant_ids) if body.candidate_restaurant_ids is not None else None
        request = Recommendation(int(user_id.removeprefix("u")), body.latitude, body.longitude, candidates,
                                 body.size, body.max_dist, body.sort_dist)
        try:
            plan = recommender.plan(request)
            fetched = await from_store(artifacts.store.fetch_async(request.user_id, plan.ids))
            answer = recommender.finish(plan, fetched)
        except StoreUnavailable as unavailable:
            return error(503, f"online store unavailable: {unavailable}", retry_after=breaker.retry_after_s)
        except FeaturesNotLoaded as not_loaded:
            return error(503, f"features not loaded: {not_loaded}", retry_after=1)
        except UnknownUser as unknown:
            return error(404, "unknown user", "user_id", [{"user_id": unknown.user_id}])
        except RequestError as invalid_field:
            return error(422, str(invalid_field), invalid_field.field)
        return Response(orjson.dumps(answer.as_json()), media_type="application/json")

    @app.get("/health", dependencies=token.declared())
    async def health(request: Request) -> JSONResponse:
        """Ready (200) when the model, the geo index and the online store's features are loaded
        (a live version holding users and restaurants) and the store answers, and the server is not
        draining; otherwise 503 with the reason. Always answers within the deadline. With an API token
        set, a request without it gets only ``{"ready": ...}``."""
        live, store = None, {}
        if not breaker.allow():
            store = {"error": f"unavailable: {breaker.last_error}"}
        else:
            try:
                live = await from_store(asyncio.to_thread(artifacts.store.live))
                store = ({"version": live.number, "users_version": live.users_version,
                          "restaurants_version": live.restaurants_version, "loaded_at": live.created_at,
                          "users_rows": live.users_rows, "restaurants_rows": live.restaurants_rows}
                         if live else {"error": "features not loaded: the store has no live version"})
                if live and not (live.users_rows and live.restaurants_rows):
                    store["error"] = (f"the live store version {live.number} holds {live.users_rows} users and "
                                      f"{live.restaurants_rows} restaurants: no request can be answered")
            except StoreUnavailable as unavailable:
                store = {"error": f"unavailable: {unavailable}"}
        reasons = [r for r in ("draining" if DRAIN.draining else "", artifacts.not_ready_reason(),
                               store.get("error", "")) if r]
        headers = {"Retry-After": "1"} if reasons else None
        if not token.sent_by(request.headers.get("authorization")):
            return JSONResponse({"ready": not reasons}, status_code=503 if reasons else 200, headers=headers)
        return JSONResponse(public_value({
            "ready": not reasons, "reason": "; ".join(reasons), "pid": os.getpid(),
            "model_version": artifacts.model_version,
            "model_format": artifacts.model_record.get("serve", "torchscript") if artifacts.model_version else None,
            "model_feature_versions": artifacts.model_record.get("feature_versions", {}),
            "geo_index_version": artifacts.geo_version, "store": store, "reloads": artifacts.reloads,
            "last_reload_failure": artifacts.last_failure.as_json() if artifacts.last_failure else None,
        }, root), status_code=503 if reasons else 200, headers=headers)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        """Prometheus metrics (never touches the store)."""
        return PlainTextResponse(api_metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return app
