"""``pipeline simulate``: traffic from the synthetic population, and its clicks from the
dataset's own ground truth.

Request ``i`` is a row of ``requests.parquet`` (a user, a location, a candidate list) chosen with
a random stream keyed by (seed, i), sent with ``X-Request-Id: sim-SEED-i``, ``sort_dist`` false
and ``size`` as asked. For each restaurant shown at rank ``r`` the simulated user clicks with
probability ``examination(r) × p``:

- ``p`` is the generator's click probability for that user and restaurant
  (:func:`pipeline.data.generate.click_probability`: the sigmoid of the signal features' dot
  product plus logit noise N(0, 0.1²), drawn once per candidate from the request's stream);
- ``examination(r) = 1 / log2(1 + r)`` is the chance the user looks at rank ``r`` at all
  (position bias: rank 1 → 1, rank 3 → 0.5, rank 10 → 0.29).

Requests are sent open loop (request ``i`` at ``start + i / rate``, at most ``MAX_IN_FLIGHT``
unanswered; past that a request is skipped and counted). Given the same seed and the same served
model, the requests and the clicks are the same.

The summary compares what was served with what the same users would have done with the same
restaurants in range, ranked two other ways, as expected click rates at ranks ≤ k: ``random``
(the in-range candidates in random order) and ``best`` (in order of their true click probability:
the best any model could do). ``ctr_at_k`` is what the simulated users actually clicked.
Click events (:mod:`pipeline.feedback.click_events`) are written at the end, one file per UTC day.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
import orjson
import polars as pl
import pyarrow.parquet as pq

from pipeline.data.generate import LOGIT_NOISE_STD, N_SIGNAL_FEATURES, click_probability
from pipeline.data.id_index import IdIndex
from pipeline.data.schema import RESTAURANT_FEATURE_COLUMNS, USER_FEATURE_COLUMNS
from pipeline.feedback import click_events
from pipeline.geo.distance import haversine_m

KS = (1, 5, 10)
MAX_RATE, MAX_DURATION_S, MAX_IN_FLIGHT = 1000.0, 86_400.0, 256
CLICK_DELAY_MEAN_S = 3.0


def examination(ranks: np.ndarray) -> np.ndarray:
    """The chance a user looks at each (1-based) rank."""
    return 1.0 / np.log2(1.0 + np.asarray(ranks, np.float64))


@dataclass(frozen=True)
class GroundTruth:
    """What the generator drew clicks from: signal features and restaurant locations."""

    users: IdIndex
    user_signal: np.ndarray          # [users, 10] float32
    restaurants: IdIndex
    restaurant_signal: np.ndarray    # [restaurants, 10] float32
    latitudes: np.ndarray
    longitudes: np.ndarray

    @classmethod
    def load(cls, dataset: Path) -> GroundTruth:
        signal_users = list(USER_FEATURE_COLUMNS[:N_SIGNAL_FEATURES])
        signal_restaurants = list(RESTAURANT_FEATURE_COLUMNS[:N_SIGNAL_FEATURES])
        users = pl.read_parquet(dataset / "user_features.parquet", columns=["user_id", *signal_users]).sort("user_id")
        restaurants = pl.read_parquet(dataset / "restaurant_features.parquet",
                                      columns=["restaurant_id", "latitude", "longitude", *signal_restaurants]
                                      ).sort("restaurant_id")
        return cls(IdIndex(users["user_id"].to_numpy()), users.select(signal_users).to_numpy().astype(np.float32),
                   IdIndex(restaurants["restaurant_id"].to_numpy()),
                   restaurants.select(signal_restaurants).to_numpy().astype(np.float32),
                   restaurants["latitude"].to_numpy(), restaurants["longitude"].to_numpy())

    def probabilities(self, user_id: int, restaurant_ids: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """The generator's click probability of each restaurant for the user (NaN: an unknown id)."""
        user = self.users.rows(np.array([user_id]))[0]
        rows = self.restaurants.rows(restaurant_ids)
        known = rows >= 0
        p = np.full(len(restaurant_ids), np.nan)
        if user >= 0 and known.any():
            signal = self.restaurant_signal[rows[known]]
            p[known] = click_probability(np.broadcast_to(self.user_signal[user], signal.shape), signal,
                                         noise[known].astype(np.float32))
        return p

    def metres(self, latitude: float, longitude: float, restaurant_ids: np.ndarray) -> np.ndarray:
        rows = self.restaurants.rows(restaurant_ids)
        metres = np.full(len(restaurant_ids), np.inf)
        known = rows >= 0
        metres[known] = haversine_m(latitude, longitude, self.latitudes[rows[known]], self.longitudes[rows[known]])
        return metres


@dataclass
class Tally:
    """Running sums of the summary."""

    requests: int = 0
    answered: int = 0
    errors: int = 0
    skipped: int = 0
    impressions: int = 0
    clicks: int = 0
    shown_at: dict[int, int] = field(default_factory=lambda: dict.fromkeys(KS, 0))
    clicked_at: dict[int, int] = field(default_factory=lambda: dict.fromkeys(KS, 0))
    expected: dict[str, dict[int, float]] = field(
        default_factory=lambda: {how: dict.fromkeys(KS, 0.0) for how in ("served", "random", "best")})
    slots: dict[str, dict[int, int]] = field(
        default_factory=lambda: {how: dict.fromkeys(KS, 0) for how in ("served", "random", "best")})

    def summary(self) -> dict:
        rate = {k: self.clicked_at[k] / self.shown_at[k] if self.shown_at[k] else 0.0 for k in KS}
        expected = {how: {f"ctr_at_{k}": self.expected[how][k] / self.slots[how][k] if self.slots[how][k] else 0.0
                          for k in KS} for how in self.expected}
        return {"requests": self.requests, "answered": self.answered, "errors": self.errors, "skipped": self.skipped,
                "impressions": self.impressions, "clicks": self.clicks,
                "ctr": self.clicks / self.impressions if self.impressions else 0.0,
                **{f"ctr_at_{k}": rate[k] for k in KS}, "expected": expected}


@dataclass
class Clicks:
    request_ids: list[str] = field(default_factory=list)
    restaurant_ids: list[int] = field(default_factory=list)
    clicked_at_us: list[int] = field(default_factory=list)


class Simulator:
    """Sends requests to a running API and decides the clicks of what it shows."""

    def __init__(self, dataset: Path, seed: int = 0, size: int = 20):
        self.truth = GroundTruth.load(dataset)
        self.requests = pq.read_table(dataset / "requests.parquet").to_pydict()
        self.seed, self.size = seed, size
        self.tally, self.clicks = Tally(), Clicks()

    def _rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(i,)))

    def request(self, i: int) -> tuple[str, int, dict, np.random.Generator]:
        """(request id, user id, body, the request's stream) of request ``i``."""
        rng = self._rng(i)
        row = int(rng.integers(len(self.requests["user_id"])))
        body = {"candidate_restaurant_ids": self.requests["candidate_restaurant_ids"][row],
                "latitude": self.requests["latitude"][row], "longitude": self.requests["longitude"][row],
                "size": self.size, "max_dist": float(self.requests["max_dist"][row]), "sort_dist": False}
        return f"sim-{self.seed}-{i}", int(self.requests["user_id"][row]), body, rng

    def react(self, request_id: str, user_id: int, body: dict, rng: np.random.Generator, shown: list[dict],
              answered_at_us: int) -> None:
        """The simulated user's clicks on ``shown``, and the expected rates of the three rankings."""
        candidates = np.asarray(body["candidate_restaurant_ids"], np.int64)
        noise = rng.normal(0.0, LOGIT_NOISE_STD, len(candidates))  # one draw per candidate, whatever is shown
        p_candidates = self.truth.probabilities(user_id, candidates, noise)
        in_range = (self.truth.metres(body["latitude"], body["longitude"], candidates) <= body["max_dist"]) \
            & ~np.isnan(p_candidates)
        _, first = np.unique(candidates, return_index=True)
        distinct = np.zeros(len(candidates), bool)
        distinct[first] = True
        p_range = p_candidates[in_range & distinct]
        by_id = dict(zip(candidates.tolist(), p_candidates.tolist(), strict=True))
        shown_ids = np.array([item["id"] for item in shown], np.int64)
        p_shown = np.array([by_id.get(i, np.nan) for i in shown_ids.tolist()], np.float64)
        p_shown = np.nan_to_num(p_shown, nan=0.0)
        look = examination(np.arange(1, len(shown_ids) + 1))
        clicked = rng.random(len(shown_ids)) < look * p_shown
        delays = rng.exponential(CLICK_DELAY_MEAN_S * 1e6, len(shown_ids)).astype(np.int64)
        tally = self.tally
        tally.answered += 1
        tally.impressions += len(shown_ids)
        tally.clicks += int(clicked.sum())
        slots = min(len(p_range), self.size)
        rankings = {"served": p_shown, "random": np.full(slots, p_range.mean() if len(p_range) else 0.0),
                    "best": np.sort(p_range)[::-1][:slots]}
        for k in KS:
            tally.shown_at[k] += min(k, len(shown_ids))
            tally.clicked_at[k] += int(clicked[:k].sum())
            for how, p in rankings.items():
                n = min(k, len(p))
                tally.expected[how][k] += float((examination(np.arange(1, n + 1)) * p[:n]).sum())
                tally.slots[how][k] += n
        for restaurant, delay in zip(shown_ids[clicked].tolist(), delays[clicked].tolist(), strict=True):
            self.clicks.request_ids.append(request_id)
            self.clicks.restaurant_ids.append(restaurant)
            self.clicks.clicked_at_us.append(answered_at_us + delay)

    async def run(self, url: str, rate: float, duration_s: float, timeout_s: float = 10.0, token: str = "") -> dict:
        if not 0 < rate <= MAX_RATE or not 0 < duration_s <= MAX_DURATION_S:
            raise ValueError(f"--rate must be within (0, {MAX_RATE:g}] and --duration within (0, {MAX_DURATION_S:g}] "
                             f"seconds, got {rate:g} and {duration_s:g}")
        total = max(1, int(rate * duration_s))
        in_flight: set[asyncio.Task] = set()
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s), headers=headers,
                                         connector=aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)) as session:
            async def send(i: int) -> None:
                request_id, user_id, body, rng = self.request(i)
                try:
                    async with session.post(f"{url.rstrip('/')}/recommend/{user_id}", data=orjson.dumps(body),
                                            headers={"X-Request-Id": request_id}) as response:
                        payload = await response.read()
                        if response.status != 200:
                            self.tally.errors += 1
                            return
                except (TimeoutError, aiohttp.ClientError):
                    self.tally.errors += 1
                    return
                self.react(request_id, user_id, body, rng, orjson.loads(payload)["restaurants"], time.time_ns() // 1000)

            start = time.perf_counter()
            for i in range(total):
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                self.tally.requests += 1
                if len(in_flight) >= MAX_IN_FLIGHT:
                    self.tally.skipped += 1
                    continue
                task = asyncio.create_task(send(i))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            if in_flight:
                await asyncio.gather(*in_flight)
        return self.tally.summary()

    def write_clicks(self, out: Path) -> list[Path]:
        """The click events, one file per UTC day of the click; the files written."""
        if not self.clicks.request_ids:
            return []
        events = click_events.table(self.clicks.request_ids, self.clicks.restaurant_ids, self.clicks.clicked_at_us)
        days = np.array([dt.datetime.fromtimestamp(us / 1e6, dt.UTC).date().isoformat()
                         for us in self.clicks.clicked_at_us])
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
        written = []
        for day in sorted(set(days.tolist())):
            path = out / f"date={day}" / f"clicks-{stamp}-seed{self.seed}-p{os.getpid()}.parquet"
            click_events.write(path, events.filter(days == day))
            written.append(path)
        return written


def wait_until_ready(url: str, timeout_s: float) -> None:
    """Poll ``/health`` until the API says it is ready; TimeoutError naming the last answer after ``timeout_s``."""
    deadline, last = time.monotonic() + timeout_s, "no answer"
    while True:
        try:
            with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except urllib.error.HTTPError as error:
            last = f"{error.code} {error.read()[:200].decode(errors='replace')}"
        except OSError as error:
            last = str(error)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} was not ready within {timeout_s:g} s (last: {last})")
        time.sleep(0.25)


def simulate(dataset: Path, url: str, rate: float, duration_s: float, seed: int, out: Path, size: int = 20,
             token: str = "", wait_s: float = 0.0) -> dict:
    """Run the traffic (after waiting up to ``wait_s`` for the API to be ready), write its click
    events under ``out``; the summary (and the files)."""
    simulator = Simulator(dataset, seed, size)
    if wait_s > 0:
        wait_until_ready(url, wait_s)
    summary = asyncio.run(simulator.run(url, rate, duration_s, token=token))
    files = simulator.write_clicks(out)
    return {**summary, "seed": seed, "rate": rate, "duration_s": duration_s,
            "click_files": [str(f) for f in files]}
