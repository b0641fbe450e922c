"""The API's Prometheus metrics: one set for the whole server, however many workers.

Counters and the latency histogram count every ``/recommend`` answer by status; the rows-scored
histogram counts the rows the model scored for each answered one. The state of
what is served is kept as gauges each worker refreshes (at every scrape it answers, and every
poll interval), aggregated over the live workers: ``model_info{version}`` is the number of
workers serving that version (a version no longer served shows 0), ``model_reloads`` the most
artifact sets any worker has loaded, ``artifact_reload_failures_total{artifact}`` the most
published versions any worker rejected (each worker checks every version: a sum would count
one bad version once per worker), and ``store_available`` is 0 when any worker saw the online
store fail its last call.

With several workers ``pipeline serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's
multiprocess mode): each worker writes its values to files there and a scrape reads them all.
A worker that exits is marked dead (its gauges dropped, its counts kept), by itself when it
stops and by the next scrape when it was killed.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.api.artifacts import SERVED_ARTIFACTS, Artifacts
from pipeline.feedback.log_writer import ImpressionLog
from pipeline.processes import pid_alive
from pipeline.serving.breaker import Breaker
from pipeline.serving.recommender import Answer

LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w+_(\d+)\.db$")


class ApiMetrics:
    """The metrics of one server process and the exposition of all of them."""

    def __init__(self, artifacts: Artifacts, breaker: Breaker, impression_log: ImpressionLog | None = None):
        self.artifacts, self.breaker, self.impression_log = artifacts, breaker, impression_log
        registry = CollectorRegistry()
        self.requests = Counter("recommend_requests", "Recommendation requests by HTTP status", ["status"],
                                registry=registry)
        self.latency = Histogram("recommend_latency_seconds", "Time to answer a recommendation request",
                                 buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
                                 registry=registry)
        self.rows_scored = Histogram("recommend_rows_scored", "Rows the model scored for an answered "
                                     "recommendation (the candidates within max_dist that have features)",
                                     buckets=(0, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000),
                                     registry=registry)
        self.model_info = Gauge("model_info", "Workers serving each model version", ["version"],
                                multiprocess_mode="livesum", registry=registry)
        self.reloads = Gauge("model_reloads", "Artifact sets loaded since start (the most of any worker)",
                             multiprocess_mode="livemax", registry=registry)
        self.failures = Gauge("artifact_reload_failures_total", "Published versions rejected by the server's "
                              "checks, by artifact (the most of any worker)", ["artifact"],
                              multiprocess_mode="livemax", registry=registry)
        self.store_available = Gauge("store_available", "1 unless the online store failed its last call "
                                     "(in any worker)", multiprocess_mode="livemin", registry=registry)
        self.impressions = Counter("impressions_logged", "Answered recommendations published to the impression log",
                                   registry=registry)
        self.impressions_dropped = Counter("impressions_dropped", "Answered recommendations not logged, by reason: "
                                           "queue_full (never waited on), write_failed (a segment not published)",
                                           ["reason"], registry=registry)
        self.segments = Counter("impression_segments", "Impression log segments by outcome (published, failed)",
                                ["outcome"], registry=registry)
        self.queued = Gauge("impressions_queued", "Records waiting for the impression log's writer",
                            multiprocess_mode="livesum", registry=registry)
        self.arms = Counter("recommend_answers_by_model", "Answered recommendations by the role of the model "
                            "that answered (champion, challenger: the canary)", ["role"], registry=registry)
        self.challenger_errors = Counter("challenger_errors", "Canary requests the challenger failed on (the "
                                         "champion answered them)", registry=registry)
        self.shadow_overlap = Histogram("shadow_topk_overlap", "Share of the shown list the shadow model would "
                                        "also have shown", buckets=(0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 1.0),
                                        registry=registry)
        self.shadow_correlation = Histogram("shadow_rank_correlation", "Spearman correlation of the answering and "
                                            "the shadow model's scores over a request's candidates",
                                            buckets=(-0.5, 0.0, 0.5, 0.8, 0.9, 0.95, 0.99, 1.0), registry=registry)
        self.shadow_difference = Histogram("shadow_score_abs_difference", "Mean absolute difference of the two "
                                           "models' click probabilities over a request's candidates",
                                           buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5),
                                           registry=registry)
        self.challenger_info = Gauge("challenger_info", "Workers holding each challenger export version",
                                     ["version"], multiprocess_mode="livesum", registry=registry)
        self._log_counts = dict.fromkeys(("logged", "dropped", "lost", "segments", "failed_segments"), 0)
        self.directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        if self.directory:
            self.scraped = CollectorRegistry()
            MultiProcessCollector(self.scraped, self.directory)
        else:
            self.scraped = registry
        self._served: str = ""
        self._challenger: str = ""

    def answered(self, answer: Answer) -> None:
        """Count an answered recommendation: rows scored, which model answered, its shadow comparison."""
        self.rows_scored.observe(answer.scored)
        self.arms.labels("challenger" if answer.canary and not answer.challenger_failed else "champion").inc()
        if answer.challenger_failed:
            self.challenger_errors.inc()
        shadow = answer.shadow
        if shadow is not None:
            self.shadow_overlap.observe(shadow.overlap)
            if shadow.rank_correlation == shadow.rank_correlation:  # not NaN (fewer than 2 candidates)
                self.shadow_correlation.observe(shadow.rank_correlation)
            self.shadow_difference.observe(shadow.score_difference)

    def refresh(self) -> None:
        """Write this worker's view of what it serves into its gauges."""
        self._served = _one_version(self.model_info, self._served, self.artifacts.model_version)
        challenger = self.artifacts.challenger.version if self.artifacts.challenger else ""
        self._challenger = _one_version(self.challenger_info, self._challenger, challenger)
        self.reloads.set(self.artifacts.reloads)
        for kind in SERVED_ARTIFACTS:
            self.failures.labels(kind).set(self.artifacts.failures[kind])
        self.store_available.set(0 if self.breaker.is_open else 1)
        if self.impression_log is not None:
            self._count_log(self.impression_log)

    def _count_log(self, impression_log: ImpressionLog) -> None:
        """Add what the log's counts grew by since the last refresh (its writer thread counts in
        plain integers; the counters are incremented here, in the event loop)."""
        counters = {"logged": self.impressions, "dropped": self.impressions_dropped.labels("queue_full"),
                    "lost": self.impressions_dropped.labels("write_failed"),
                    "segments": self.segments.labels("published"), "failed_segments": self.segments.labels("failed")}
        for name, counter in counters.items():
            now = getattr(impression_log, name)
            if now > self._log_counts[name]:
                counter.inc(now - self._log_counts[name])
                self._log_counts[name] = now
        self.queued.set(impression_log.queued)

    def exposition(self) -> bytes:
        self.refresh()
        if self.directory:
            self._forget_dead_workers()
        return generate_latest(self.scraped)

    def _forget_dead_workers(self) -> None:
        pids = {int(m.group(1)) for m in map(LIVE_GAUGE_FILE.match, os.listdir(self.directory)) if m}
        for pid in pids:
            if not pid_alive(pid):
                # another worker's scrape may forget the same dead worker at the same moment, and
                # mark_process_dead removes its files unguarded: gone already is done
                with contextlib.suppress(FileNotFoundError):
                    mark_process_dead(pid, self.directory)

    def close(self) -> None:
        if self.directory and Path(self.directory).is_dir():
            mark_process_dead(os.getpid(), self.directory)


def _one_version(gauge: Gauge, before: str, now: str) -> str:
    """Mark ``now`` (if any) as this worker's version on ``gauge`` and ``before`` as no longer; returns ``now``."""
    if before and before != now:
        gauge.labels(before).set(0)
    if now:
        gauge.labels(now).set(1)
    return now


class CountRecommendations:
    """ASGI middleware: counts every ``/recommend`` answer by status and times it, whatever produced
    it (the route, validation, the body limits, or an exception that escaped: counted as 500)."""

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
