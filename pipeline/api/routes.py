"""The routes: ``POST /recommend/{user_id}``, ``GET /health``, ``GET /metrics``. Each takes what it
needs from the app's :class:`~pipeline.api.state.ApiState` (``api_state(request)``: cheaper per
request than a FastAPI dependency); the app factory registers them with their token dependencies.

Filtering and scoring run in the event loop: they take less CPU than a thread hop per request
would cost. The store is only ever awaited, within the deadline
(:func:`~pipeline.api.store_reads.read_within`), and not at all while the breaker is open.
"""

# no "from __future__ import annotations": FastAPI reads the routes' annotations
import asyncio
import os
import time

import orjson
from fastapi import Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from pipeline.api.drain import DRAIN
from pipeline.api.errors import error_response
from pipeline.api.public import public_value
from pipeline.api.request_ids import HEADER
from pipeline.api.schemas import RecommendBody, UserId
from pipeline.api.state import api_state
from pipeline.api.store_reads import read_within
from pipeline.feedback.log_format import REQUEST_ID_RULE, Impression
from pipeline.serving.recommender import Recommender, UnknownUser
from pipeline.serving.request import RequestError
from pipeline.store.base import FeaturesNotLoaded, StoreUnavailable, StoreVersion


async def recommend(user_id: UserId, body: RecommendBody, request: Request) -> Response:
    """Restaurants within ``max_dist`` of the point, scored for the user, best first. The answer
    carries ``X-Request-Id``: the caller's (letters, digits and ``._:-``, at most 128 characters),
    else one made here; with the impression log on, the answer is logged under it."""
    started = time.perf_counter_ns()
    api = api_state(request)
    artifacts, breaker, root = api.artifacts, api.breaker, api.root
    request_id = request.headers.get(HEADER)
    if request_id is None:
        request_id = api.request_ids.make()
    elif not api.request_ids.valid(request_id):
        return error_response(400, f"X-Request-Id: {REQUEST_ID_RULE}", root, "X-Request-Id")
    headers = {"X-Request-Id": request_id}
    recommender = artifacts.recommender
    if recommender is None:
        return error_response(503, f"not ready: {artifacts.not_ready_reason()}", root, retry_after=1, headers=headers)
    if not breaker.allow():
        return error_response(503, f"online store unavailable: {breaker.last_error}", root,
                              retry_after=breaker.retry_after_s, headers=headers)
    wanted = body.request(user_id)
    try:
        plan = recommender.plan(wanted)
        fetched = await read_within(recommender.read_async(plan), breaker, api.limits.deadline_s)
        answer = recommender.finish(plan, fetched)
        api.metrics.answered(answer)
    except StoreUnavailable as unavailable:
        return error_response(503, f"online store unavailable: {unavailable}", root,
                              retry_after=breaker.retry_after_s, headers=headers)
    except FeaturesNotLoaded as not_loaded:
        return error_response(503, f"features not loaded: {not_loaded}", root, retry_after=1, headers=headers)
    except UnknownUser as unknown:
        return error_response(404, "unknown user", root, "user_id", [{"user_id": unknown.user_id}], headers=headers)
    except RequestError as invalid_field:
        return error_response(422, str(invalid_field), root, invalid_field.field, headers=headers)
    response = Response(orjson.dumps(answer.as_json()), media_type="application/json", headers=headers)
    if api.log is not None:
        served, shadow = answer.served, answer.shadow
        candidates = wanted.candidate_restaurant_ids
        api.log.add(Impression(
            request_id, time.time_ns(), wanted.user_id, served.model_version, served.model_format,
            answer.store_version, served.geo_version, wanted.latitude, wanted.longitude, wanted.size,
            wanted.max_dist, wanted.sort_dist, None if candidates is None else len(candidates), answer.within,
            answer.ids, answer.scores, answer.displacements, answer.propensities, answer.explored_slot,
            answer.canary, (time.perf_counter_ns() - started) // 1000,
            *((shadow.version, shadow.scores, shadow.overlap, shadow.rank_correlation, shadow.score_difference)
              if shadow is not None else (None, None, None, None, None))))
    return response


def _challenger(artifacts) -> dict | None:
    loaded, release = artifacts.challenger, artifacts.release
    if loaded is None:
        return None
    return {"version": loaded.version, "checkpoint_version": loaded.record.get("checkpoint_version"),
            "model_format": loaded.value.format, "canary_share": release.canary_share,
            "shadow_share": release.shadow_share}


def _store_health(live: StoreVersion | None) -> dict:
    if live is None:
        return {"error": "features not loaded: the store has no live version"}
    store = {"version": live.number, "users_version": live.users_version,
             "restaurants_version": live.restaurants_version, "loaded_at": live.created_at,
             "users_rows": live.users_rows, "restaurants_rows": live.restaurants_rows}
    if not (live.users_rows and live.restaurants_rows):
        store["error"] = (f"the live store version {live.number} holds {live.users_rows} users and "
                          f"{live.restaurants_rows} restaurants: no request can be answered")
    return store


def _held(recommender: Recommender | None) -> dict | None:
    held = recommender.held if recommender is not None else None
    if recommender is None or held is None:
        return None
    return {"snapshot_version": held.snapshot_version, "restaurants": int(held.present.sum()),
            "user_only_reads": recommender.user_only_reads, "full_reads": recommender.full_reads}


async def health(request: Request) -> JSONResponse:
    """Ready (200) when the model, the geo index and the online store's features are loaded
    (a live version holding users and restaurants) and the store answers, and the server is not
    draining; otherwise 503 with the reason. Always answers within the deadline. With an API token
    set, a request without it gets only ``{"ready": ...}``."""
    api = api_state(request)
    artifacts, breaker = api.artifacts, api.breaker
    if not breaker.allow():
        store = {"error": f"unavailable: {breaker.last_error}"}
    else:
        try:
            store = _store_health(await read_within(asyncio.to_thread(artifacts.store.live), breaker,
                                                    api.limits.deadline_s))
        except StoreUnavailable as unavailable:
            store = {"error": f"unavailable: {unavailable}"}
    reasons = [r for r in ("draining" if DRAIN.draining else "", artifacts.not_ready_reason(),
                           store.get("error", "")) if r]
    status, headers = (503, {"Retry-After": "1"}) if reasons else (200, None)
    if not api.token.sent_by(request.headers.get("authorization")):
        return JSONResponse({"ready": not reasons}, status_code=status, headers=headers)
    model = artifacts.model_record
    return JSONResponse(public_value({
        "ready": not reasons, "reason": "; ".join(reasons), "pid": os.getpid(),
        "model_version": artifacts.model_version,
        "model_format": artifacts.model_format or None,
        "challenger": _challenger(artifacts),
        "model_feature_versions": model.get("feature_versions", {}),
        "geo_index_version": artifacts.geo_version, "store": store,
        "held_restaurants": _held(artifacts.recommender), "reloads": artifacts.reloads,
        "last_reload_failure": artifacts.last_failure.as_json() if artifacts.last_failure else None,
    }, api.root), status_code=status, headers=headers)


async def metrics(request: Request) -> PlainTextResponse:
    """Prometheus metrics (never touches the store)."""
    return PlainTextResponse(api_state(request).metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
