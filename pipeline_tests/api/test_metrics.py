"""One ``/metrics`` for all workers: whichever worker a scrape reaches reports every worker's
requests, and what is served is aggregated over the live workers (a real ``pipeline serve``
with two workers)."""

from __future__ import annotations

import concurrent.futures
import os
import re
import signal

import pytest

from pipeline.serving.recommender import Recommender
from pipeline.serving.request import Request
from pipeline.serving.scorer import live_scorer
from pipeline.store.sqlite import SQLiteStore
from pipeline_devtools.api_process import BODY, ApiProcess, get, health, post, sqlite_serving, wait_for


def _scrape(base: str) -> dict[str, float]:
    """Every sample of one scrape (on a new connection), by series."""
    status, text = get(base, "/metrics")
    assert status == 200
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\S+) (\S+)$", text, re.MULTILINE)}


def _scrapes(base: str, count: int = 24) -> list[dict[str, float]]:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:  # concurrent: both workers accept some
        return list(pool.map(lambda _: _scrape(base), range(count)))


def _worker_pids(base: str) -> set[int]:
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        return {answer["pid"] for answer in pool.map(lambda _: health(base), range(64))}


@pytest.mark.slow
def test_two_workers_report_one_set_of_metrics(serving_artifacts, tmp_path):
    warehouse, env = sqlite_serving(serving_artifacts, tmp_path)
    private_tmp = tmp_path / "tmp"
    left_by_a_killed_server = private_tmp / "pipeline-api-metrics-999999999-x"
    left_by_a_killed_server.mkdir(parents=True)
    api = ApiProcess(tmp_path, {**env, "TMPDIR": str(private_tmp)}, workers=2)
    try:
        api.wait_until(ready=True)
        assert [d.name.split("-")[3] for d in private_tmp.iterdir()] == [str(api.process.pid)]
        pids = wait_for(lambda: len(seen := _worker_pids(api.base)) == 2 and seen, timeout_s=30,
                         what="answers from both workers")
        version = health(api.base)["model_version"]
        store = SQLiteStore(env["PIPELINE_SQLITE_PATH"])
        recommender = Recommender(serving_artifacts[2], store, live_scorer(warehouse.export))
        request = Request(7, BODY["latitude"], BODY["longitude"], tuple(BODY["candidate_restaurant_ids"]),
                          max_dist=BODY["max_dist"])
        scored = recommender.recommend(request).scored
        store.close()
        assert scored > 20  # more than an answer's 20: the rows scored, not the rows answered
        requests = 120
        with concurrent.futures.ThreadPoolExecutor(16) as pool:  # new connections, spread over both workers
            statuses = list(pool.map(lambda _: post(api.base, "/recommend/7", BODY)[0], range(requests)))
        unknown = [post(api.base, "/recommend/99999999", BODY)[0] for _ in range(3)]
        assert statuses == [200] * requests and unknown == [404] * 3
        for scrape in _scrapes(api.base):
            assert scrape['recommend_requests_total{status="200"}'] == requests, scrape
            assert scrape['recommend_requests_total{status="404"}'] == 3
            assert scrape["recommend_latency_seconds_count"] == requests + 3
            assert scrape["recommend_rows_scored_count"] == requests  # answered ones only
            assert scrape["recommend_rows_scored_sum"] == requests * scored
            assert scrape[f'model_info{{version="{version}"}}'] == 2  # two workers serve it
            assert scrape["store_available"] == 1 and scrape["model_reloads"] == 1

        # a worker killed: its counts stay, its gauges go, its replacement's come
        os.kill(min(pids), signal.SIGKILL)
        wait_for(lambda: (seen := _worker_pids(api.base)) and len(seen) == 2 and min(pids) not in seen,
                  timeout_s=60, what="a replacement worker")
        wait_for(lambda: all(s[f'model_info{{version="{version}"}}'] == 2 for s in _scrapes(api.base)),
                  what="the replacement's gauges")
        for scrape in _scrapes(api.base):
            assert scrape['recommend_requests_total{status="200"}'] == requests
    finally:
        api.stop()
    assert not list(private_tmp.iterdir())  # the metrics directory is gone with the server
