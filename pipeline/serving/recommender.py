"""Recommendations for one request: filter by distance, read features, score, sort, cut.

Request (the reference's): user_id, latitude, longitude, optional candidate_restaurant_ids,
size (default 20), max_dist (metres, default 5000), sort_dist (default false). Answer: restaurants
within max_dist with id, score (click probability) and displacement (metres), sorted by score
descending (ties: nearer first) or, with sort_dist, by displacement ascending; at most ``size``.
With exploration on (``PIPELINE_EXPLORATION_EPSILON``), a score-sorted answer may show one
restaurant of its lower slots out of order (:mod:`pipeline.serving.exploration`).

Distance filtering happens before anything is read or scored: with the reference's 1,000
uniform candidates only ~19 (5 km) to ~70 (10 km) remain, and only those are read from the store,
together with the user, in one round trip. When the worker holds the live version's restaurant
snapshot (:mod:`pipeline.serving.held_restaurants`), only the user is read.

Every request's cost is bounded. With a candidate list: at most ``MAX_CANDIDATES`` ids. Without
one (every restaurant near the point): ``max_dist`` at most ``MAX_DIST_WITHOUT_CANDIDATES_M``
(the H3 disk to search grows with its square), at most ``MAX_EXAMINED`` restaurants in the cells
searched, and at most ``MAX_CANDIDATES`` within ``max_dist`` (what is read and scored). Past a
bound the request is refused naming ``max_dist``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.geo.index import GeoIndex, TooManyRows
from pipeline.serving.arms import Challenger, Shadow, compare, in_canary
from pipeline.serving.exploration import explore
from pipeline.serving.held_restaurants import HeldRestaurants
from pipeline.serving.request import MAX_CANDIDATES, Request, RequestError
from pipeline.store.base import FeatureStore, FeatureTable, Fetched, UserRead

MAX_DIST_WITHOUT_CANDIDATES_M = 50_000.0
MAX_EXAMINED = 50_000


class UnknownUser(LookupError):
    def __init__(self, user_id: int):
        super().__init__(f"unknown user: {user_id}")
        self.user_id = user_id


@dataclass(frozen=True)
class Plan:
    """A validated request and the restaurants within ``max_dist`` (geo index rows, ids, metres)."""

    request: Request
    rows: np.ndarray
    ids: np.ndarray
    metres: np.ndarray
    unknown_candidates: int


@dataclass(frozen=True)
class Served:
    """What a recommender serves: the versions an answer is logged with."""

    model_version: str = ""
    model_format: str = ""
    geo_version: str = ""


@dataclass
class Answer:
    ids: np.ndarray
    scores: np.ndarray
    displacements: np.ndarray
    unknown_candidates: int = 0
    within: int = 0
    missing_features: int = 0
    store_version: int = 0
    propensities: np.ndarray | None = None  # each shown item's probability at its slot; None: all 1
    explored_slot: int | None = None        # the rank (1-based) that shows an explored restaurant
    served: Served = Served()               # the model that answered (the champion's or the challenger's)
    canary: bool = False                    # the user is in the challenger's canary
    challenger_failed: bool = False         # the canary's challenger failed and the champion answered
    shadow: Shadow | None = None            # how the other model ranked it, when it was shadow-scored

    @property
    def scored(self) -> int:
        """Rows the model scored: the restaurants within ``max_dist`` whose features were read."""
        return self.within - self.missing_features

    def as_json(self) -> dict:
        return {"restaurants": [{"id": i, "score": s, "displacement": d} for i, s, d in zip(
            self.ids.tolist(), self.scores.tolist(), self.displacements.tolist(), strict=True)]}


class Recommender:
    """Answers requests from a geo index, an online feature store and a scorer."""

    def __init__(self, geo: GeoIndex, store: FeatureStore, scorer, served: Served = Served(),
                 exploration: float = 0.0, seed: int | None = None, challenger: Challenger | None = None):
        self.geo, self.store, self.scorer, self.served = geo, store, scorer, served
        self.challenger = challenger
        self.exploration, self._rng = exploration, np.random.default_rng(seed)
        self.held: HeldRestaurants | None = None
        self.answers = self.rows_scored = 0  # since it was made: what benchmarks report per request
        self.shadow_failures = 0
        self.user_only_reads = self.full_reads = 0  # reads with the restaurants from ``held``, or from the store

    def hold(self, restaurants: FeatureTable) -> None:
        """Hold a restaurant snapshot's features (one assignment: atomic for readers)."""
        self.held = HeldRestaurants.aligned(self.geo, restaurants)

    def recommend(self, request: Request) -> Answer:
        """The whole request, validated, with the store's blocking reads."""
        request.validate()
        plan = self.plan(request)
        held = self.held
        if held is not None:
            fetched = self._from_held(held, self.store.fetch_user(request.user_id), plan)
            if fetched is not None:
                return self.finish(plan, fetched)
        self.full_reads += 1
        return self.finish(plan, self.store.fetch(request.user_id, plan.ids))

    async def read_async(self, plan: Plan) -> Fetched:
        """The store read of a plan for an asyncio caller: the user alone when the live version
        holds the restaurant snapshot held here, else the user and the restaurants in range."""
        held = self.held
        if held is not None:
            fetched = self._from_held(held, await self.store.fetch_user_async(plan.request.user_id), plan)
            if fetched is not None:
                return fetched
        self.full_reads += 1
        return await self.store.fetch_async(plan.request.user_id, plan.ids)

    def _from_held(self, held: HeldRestaurants, user: UserRead, plan: Plan) -> Fetched | None:
        if user.restaurants_version != held.snapshot_version:
            return None  # the live version holds another snapshot: read them from the store
        self.user_only_reads += 1
        return held.read(user, plan.rows)

    def plan(self, request: Request) -> Plan:
        """Filter by distance: the restaurants whose features must be read. The request's fields
        are within their bounds (:meth:`Request.validate`, or the API's schema); the bounds of a
        search without candidates are checked here."""
        unknown = 0
        if request.candidate_restaurant_ids is None:
            if request.max_dist > MAX_DIST_WITHOUT_CANDIDATES_M:
                raise RequestError("max_dist", f"at most {MAX_DIST_WITHOUT_CANDIDATES_M:.0f} m without "
                                   f"candidate_restaurant_ids, got {request.max_dist:g}")
            try:
                rows, metres = self.geo.within(request.latitude, request.longitude, request.max_dist, MAX_EXAMINED)
            except TooManyRows as too_many:
                raise RequestError("max_dist", f"{too_many}; lower max_dist or send "
                                   "candidate_restaurant_ids") from None
            if len(rows) > MAX_CANDIDATES:
                raise RequestError("max_dist", f"{len(rows)} restaurants lie within {request.max_dist:g} m, at "
                                   f"most {MAX_CANDIDATES} without candidate_restaurant_ids; lower max_dist "
                                   "or send candidate_restaurant_ids")
        else:
            ids = np.asarray(request.candidate_restaurant_ids, np.int64)
            candidate_rows = self.geo.rows_of(ids)
            known = candidate_rows >= 0
            unknown = 0 if known.all() else len(np.unique(ids[~known]))
            rows, metres = self.geo.filter_candidates(request.latitude, request.longitude,
                                                      candidate_rows[known], request.max_dist)
            # a repeated id counts once: removed among the few within range, not the whole list
            rows, first = np.unique(rows, return_index=True)
            metres = metres[first]
        return Plan(request, rows, self.geo.ids[rows], metres, unknown)

    def finish(self, plan: Plan, fetched: Fetched) -> Answer:
        """Score what was read, sort, cut to ``size``."""
        request = plan.request
        if fetched.user is None:
            raise UnknownUser(request.user_id)
        ids, metres = plan.ids[fetched.found], plan.metres[fetched.found]
        challenger = self.challenger
        canary = challenger is not None and in_canary(request.user_id, challenger.version, challenger.canary_share)
        served, failed = self.served, False
        if canary and challenger is not None:
            try:
                scores = challenger.scorer.probabilities_for_user(fetched.user, fetched.restaurants)
                served = Served(challenger.version, challenger.model_format, self.served.geo_version)
            except Exception:  # noqa: BLE001 - whatever the challenger does wrong, the champion answers
                failed = True
        if not canary or failed:
            scores = self.scorer.probabilities_for_user(fetched.user, fetched.restaurants)
        order = rank(scores, metres, request.sort_dist, request.size)
        propensities, explored = None, None
        if self.exploration and not request.sort_dist:
            order, propensities, explored = explore(order, len(scores), self.exploration, self._rng)
        shadow = None
        if challenger is not None and not failed and len(scores) and (
                challenger.shadow_share >= 1.0 or self._rng.random() < challenger.shadow_share):
            shadow = self._shadow(challenger, canary, fetched, scores, metres, order, request)
        self.answers, self.rows_scored = self.answers + 1, self.rows_scored + len(scores)
        return Answer(ids[order], scores[order], metres[order], unknown_candidates=plan.unknown_candidates,
                      within=len(plan.ids), missing_features=int((~fetched.found).sum()),
                      store_version=fetched.version, propensities=propensities, explored_slot=explored,
                      served=served, canary=canary, challenger_failed=failed, shadow=shadow)

    def _shadow(self, challenger: Challenger, canary: bool, fetched: Fetched, scores: np.ndarray,
                metres: np.ndarray, order: np.ndarray, request: Request) -> Shadow | None:
        """The model that did not answer, on the same candidates (None if it fails: counted)."""
        scorer, version = (self.scorer, self.served.model_version) if canary else (challenger.scorer,
                                                                                   challenger.version)
        try:
            other = scorer.probabilities_for_user(fetched.user, fetched.restaurants)
        except Exception:  # noqa: BLE001 - a shadow never affects the answer
            self.shadow_failures += 1
            return None
        # sorted by distance, both models show the same list; by score, the other shows its own top
        return compare(version, scores, other, order, order if request.sort_dist else top(other, len(order)))


def top(scores: np.ndarray, size: int) -> np.ndarray:
    """The positions of the ``size`` highest scores, in no order (a set: what the shadow compares)."""
    if size >= len(scores):
        return np.arange(len(scores))
    return np.argpartition(-scores, size - 1)[:size]


def rank(scores: np.ndarray, metres: np.ndarray, sort_dist: bool, size: int) -> np.ndarray:
    """The first ``size`` positions by score descending (ties: nearer first), or with
    ``sort_dist`` by distance ascending (ties: higher score first).

    Only the rows that can make the cut are sorted: those whose first key is within the
    ``size``-th smallest (ties at the boundary included, so the second key still decides them).
    A request without candidates scores thousands of rows and keeps 20."""
    first, second = (metres, -scores) if sort_dist else (-scores, metres)
    if size < len(first):
        boundary = np.partition(first, size - 1)[size - 1]
        contenders = np.flatnonzero(first <= boundary)
        return contenders[np.lexsort((second[contenders], first[contenders]))][:size]
    return np.lexsort((second, first))[:size]
