"""``POST /recommend/{user_id}``, ``GET /health``, ``GET /metrics``.

The request and response are the reference's. Every error is a JSON body naming the field:
malformed JSON → 400; a missing, mistyped or out-of-range field → 422; unknown user → 404.
Handlers are ``async`` and call the recommender directly: a request costs about a millisecond of
CPU, less than a thread-pool hop would add.
"""

from __future__ import annotations

import contextlib
import re
import time
from typing import Annotated

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import ORJSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline.api.artifacts import Artifacts
from pipeline.serving.recommender import MAX_CANDIDATES, RequestError, UnknownUser
from pipeline.serving.recommender import Request as Recommendation
from pipeline.store.base import FeaturesNotLoaded

INT64 = Field(ge=-(2**63), le=2**63 - 1)
_USER = re.compile(r"^u?(\d{1,18})$")


class RecommendBody(BaseModel):
    """The reference request body."""

    model_config = ConfigDict(extra="ignore")
    candidate_restaurant_ids: list[Annotated[StrictInt, INT64]] | None = Field(
        default=None, max_length=MAX_CANDIDATES,
        description="Restaurants to rank; absent: every restaurant within max_dist.")
    latitude: float = Field(ge=-90, le=90, allow_inf_nan=False)
    longitude: float = Field(ge=-180, le=180, allow_inf_nan=False)
    size: StrictInt = Field(default=20, gt=0, le=2**31 - 1)
    max_dist: float = Field(default=5000, ge=0, le=2.1e7, allow_inf_nan=False, description="metres, great-circle")
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


def create_app(artifacts: Artifacts) -> FastAPI:
    registry = CollectorRegistry()
    requests = Counter("recommend_requests", "Recommendation requests by HTTP status", ["status"],
                       registry=registry)
    latency = Histogram("recommend_latency_seconds", "Time to answer a recommendation request",
                        buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
                        registry=registry)
    model_info = Gauge("model_info", "The model being served (value 1)", ["version"], registry=registry)
    reloads = Gauge("model_reloads", "Artifact sets loaded since start", registry=registry)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        artifacts.start()
        yield
        artifacts.stop()

    app = FastAPI(title="Restaurant recommendations", version="1", lifespan=lifespan,
                  default_response_class=ORJSONResponse)

    def error(status: int, message: str, field: str | None = None, detail=None, started=None) -> ORJSONResponse:
        requests.labels(str(status)).inc()
        if started is not None:
            latency.observe(time.perf_counter() - started)
        body = {"error": message, **({"field": field} if field else {}), **({"detail": detail} if detail else {})}
        return ORJSONResponse(body, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> ORJSONResponse:
        problems = [{"field": _field(e["loc"]), "message": e["msg"]} for e in exc.errors()]
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            return error(400, "malformed JSON", "body")
        return error(422, f"invalid {problems[0]['field']}: {problems[0]['message']}", problems[0]["field"], problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> ORJSONResponse:
        # e.g. a body that cannot be decoded at all, an unknown path or method
        return error(exc.status_code, str(exc.detail), "body" if exc.status_code == 400 else None)

    @app.post("/recommend/{user_id}", response_model=RecommendResponse,
              responses={400: {"model": ErrorBody}, 404: {"model": ErrorBody}, 422: {"model": ErrorBody},
                         503: {"model": ErrorBody}})
    async def recommend(user_id: Annotated[str, Field(max_length=32, description="u00042 or 42")],
                        body: RecommendBody) -> ORJSONResponse:
        started = time.perf_counter()
        match = _USER.match(user_id)
        if match is None:
            return error(422, "user_id must be an integer or u followed by digits", "user_id", started=started)
        recommender = artifacts.recommender
        if recommender is None:
            return error(503, "not ready: model, geo index or store not loaded", started=started)
        candidates = tuple(body.candidate_restaurant_ids) if body.candidate_restaurant_ids is not None else None
        try:
            answer = recommender.recommend(Recommendation(int(match.group(1)), body.latitude, body.longitude,
                                                          candidates, body.size, body.max_dist, body.sort_dist))
        except FeaturesNotLoaded:
            return error(503, "features not loaded: the online store has no live version", started=started)
        except UnknownUser as unknown:
            return error(404, "unknown user", "user_id", [{"user_id": unknown.user_id}], started)
        except RequestError as invalid_field:
            return error(422, str(invalid_field), invalid_field.field, started=started)
        requests.labels("200").inc()
        latency.observe(time.perf_counter() - started)
        return ORJSONResponse(answer.as_json())

    @app.get("/health")
    async def health() -> ORJSONResponse:
        """Ready when the model, the geo index and the online store's features are loaded."""
        try:
            live = artifacts.store.live()
            store = {"version": live.number, "users_version": live.users_version,
                     "restaurants_version": live.restaurants_version, "loaded_at": live.created_at} if live else {
                "error": "features not loaded"}
        except Exception as unreachable:  # the store is down: not ready, and say why
            live, store = None, {"error": str(unreachable)}
        ready = artifacts.ready and live is not None
        return ORJSONResponse({"ready": ready, "model_version": artifacts.model_version,
                               "model_feature_versions": artifacts.model_record.get("feature_versions", {}),
                               "geo_index_version": artifacts.geo_version, "store": store,
                               "reloads": artifacts.reloads}, status_code=200 if ready else 503)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        model_info.clear()
        if artifacts.model_version:
            model_info.labels(artifacts.model_version).set(1)
        reloads.set(artifacts.reloads)
        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
