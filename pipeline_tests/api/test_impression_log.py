"""The impression log with real ``pipeline serve`` processes: every answer logged once under its
request id; SIGTERM loses nothing; SIGKILL loses at most the last flush interval and leaves no
partial segment; two workers log side by side; a full queue drops and counts, never blocking."""

from __future__ import annotations

import os
import signal
import threading
import time

import polars as pl
import pytest

from pipeline.feedback.log_format import logged_days, read_segment, segments
from pipeline_devtools.api_process import BODY, ApiProcess, health, metric, post, sqlite_serving, wait_for


def _log_dir(warehouse):
    return warehouse.root / "impression_log"


def _logged(warehouse) -> pl.DataFrame:
    files = [path for day in logged_days(_log_dir(warehouse)) for path in segments(_log_dir(warehouse), day)]
    return pl.concat([pl.from_arrow(read_segment(path)) for path in files]) if files else pl.DataFrame()


def _send(base: str, ids, answered: dict, stop: threading.Event | None = None, gap_s: float = 0.0) -> None:
    """POST one request per id (user = the id's number); ``answered[id] = monotonic time`` of each 200."""
    for n, request_id in ids:
        if stop is not None and stop.is_set():
            return
        try:
            status, _, headers = post(base, f"/recommend/{n % 50}", BODY, headers={"X-Request-Id": request_id},
                                      timeout=5)
        except OSError:
            continue  # the server was killed under this request
        if status == 200:
            assert headers["x-request-id"] == request_id
            answered[request_id] = time.monotonic()
        time.sleep(gap_s)


def test_every_answer_is_logged_once_with_what_served_it_and_sigterm_loses_nothing(serving_artifacts, tmp_path):
    warehouse, env = sqlite_serving(serving_artifacts, tmp_path)
    # a flush interval longer than the test: whatever is published was flushed by the shutdown
    api = ApiProcess(tmp_path, {**env, "PIPELINE_IMPRESSION_FLUSH_S": "600"})
    try:
        served = api.wait_until(ready=True)
        answered: dict[str, float] = {}
        _send(api.base, [(n, f"t-{n}") for n in range(30)], answered)
        status, made, headers = post(api.base, "/recommend/7", BODY)  # no id sent: one is made
        assert status == 200 and headers["x-request-id"]
        answered[headers["x-request-id"]] = time.monotonic()
        status, error, _ = post(api.base, "/recommend/7", BODY, headers={"X-Request-Id": "bad id/with spaces"})
        assert (status, error["field"]) == (400, "X-Request-Id")
        status, _, headers = post(api.base, "/recommend/999999", BODY, headers={"X-Request-Id": "unknown-user"})
        assert (status, headers["x-request-id"]) == (404, "unknown-user")  # answered, not logged
        assert _logged(warehouse).is_empty()
    finally:
        api.stop()  # SIGTERM
    logged = _logged(warehouse)
    assert sorted(logged["request_id"].to_list()) == sorted(answered)
    row = logged.filter(pl.col("request_id") == "t-3").row(0, named=True)
    assert (row["user_id"], row["model_version"], row["geo_version"], row["model_format"]) == (
        3, served["model_version"], served["geo_index_version"], served["model_format"])
    assert row["store_version"] == served["store"]["version"]
    assert row["candidates"] == len(BODY["candidate_restaurant_ids"])
    assert row["within"] >= len(row["restaurant_ids"]) > 0 and row["scores"] == sorted(row["scores"], reverse=True)


def test_sigkill_loses_at_most_the_last_flush_interval_and_the_next_start_continues(serving_artifacts, tmp_path):
    warehouse, env = sqlite_serving(serving_artifacts, tmp_path)
    env = {**env, "PIPELINE_IMPRESSION_FLUSH_S": "0.5"}
    api = ApiProcess(tmp_path, env)
    api.wait_until(ready=True)
    answered: dict[str, float] = {}
    stop = threading.Event()
    traffic = threading.Thread(target=_send, args=(api.base, [(n, f"k-{n}") for n in range(100_000)], answered,
                                                   stop, 0.01))
    traffic.start()
    wait_for(lambda: len(answered) > 150, 30, "traffic")
    os.kill(api.process.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    stop.set()
    traffic.join()
    api.stop()
    logged = _logged(warehouse)  # every listed segment reads whole: none is partial
    ids = logged["request_id"].to_list()
    assert len(ids) == len(set(ids)) and set(ids) <= set(answered)
    # answers older than the flush interval (and a margin for the write) were published
    older = {i for i, at in answered.items() if at < killed_at - 1.5}
    assert older <= set(ids), f"{len(older - set(ids))} answers lost from before the last interval"
    assert len(ids) < len(answered) + 1
    # the next start on the same log removes what the killed writer left and logs on
    again = ApiProcess(tmp_path, env)
    try:
        again.wait_until(ready=True)
        after: dict[str, float] = {}
        _send(again.base, [(n, f"again-{n}") for n in range(5)], after)
    finally:
        again.stop()
    assert not list(_log_dir(warehouse).glob("date=*/.seg-*"))
    assert set(after) <= set(_logged(warehouse)["request_id"].to_list())


def test_two_workers_log_side_by_side_with_unique_ids(serving_artifacts, tmp_path):
    warehouse, env = sqlite_serving(serving_artifacts, tmp_path)
    api = ApiProcess(tmp_path, {**env, "PIPELINE_IMPRESSION_FLUSH_S": "0.2"}, workers=2)
    try:
        api.wait_until(ready=True)
        answered: dict[str, float] = {}
        senders = [threading.Thread(target=_send, args=(api.base, [(n, f"w{s}-{n}") for n in range(60)], answered))
                   for s in range(4)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        wait_for(lambda: metric(api.base, "impressions_logged_total", "") == len(answered), 10, "both logs")
    finally:
        api.stop()
    logged = _logged(warehouse)
    assert sorted(logged["request_id"].to_list()) == sorted(answered)
    writers = {path.name.split("-p", 1)[1].split("-")[0] for day in logged_days(_log_dir(warehouse))
               for path in segments(_log_dir(warehouse), day)}
    assert len(writers) == 2, f"segments from {writers}"


def test_a_full_queue_drops_and_counts_and_every_request_is_still_answered(serving_artifacts, tmp_path):
    warehouse, env = sqlite_serving(serving_artifacts, tmp_path)
    api = ApiProcess(tmp_path, {**env, "PIPELINE_IMPRESSION_FLUSH_S": "600", "PIPELINE_IMPRESSION_QUEUE_RECORDS": "5"})
    try:
        api.wait_until(ready=True)
        answered: dict[str, float] = {}
        _send(api.base, [(n, f"q-{n}") for n in range(20)], answered)
        assert len(answered) == 20
        assert metric(api.base, "impressions_dropped_total", 'reason="queue_full"') == 15
        assert metric(api.base, "impressions_queued", "") == 5
        assert health(api.base)["ready"]
    finally:
        api.stop()
    assert sorted(_logged(warehouse)["request_id"].to_list()) == sorted(f"q-{n}" for n in range(5))


def test_logging_off_gives_the_app_no_log(tmp_path):
    from pipeline.api.server import build_app
    from pipeline.settings import load_settings

    variables = {"PIPELINE_WAREHOUSE_DIR": str(tmp_path / "warehouse"), "PIPELINE_SQLITE_PATH": str(tmp_path / "f.db")}
    assert build_app(load_settings({**variables, "PIPELINE_IMPRESSION_LOG": "off"})).state.api.log is None
    logging = build_app(load_settings(variables)).state.api.log
    assert logging is not None and logging.directory == tmp_path / "warehouse" / "impression_log"
    assert not (tmp_path / "warehouse" / "impression_log").exists()  # made when the server starts


def test_exploration_shows_a_lower_slot_out_of_order_and_logs_its_propensity(serving_artifacts, tmp_path):
    warehouse, env = sqlite_serving(serving_artifacts, tmp_path)
    api = ApiProcess(tmp_path, {**env, "PIPELINE_EXPLORATION_EPSILON": "1", "PIPELINE_IMPRESSION_FLUSH_S": "600"})
    try:
        api.wait_until(ready=True)
        for n, sort_dist in ((1, False), (2, False), (3, True)):
            status, _, _ = post(api.base, f"/recommend/{n}", {**BODY, "size": 6, "sort_dist": sort_dist},
                                headers={"X-Request-Id": f"e-{n}"})
            assert status == 200
    finally:
        api.stop()
    rows = {r["request_id"]: r for r in _logged(warehouse).iter_rows(named=True)}
    for request_id in ("e-1", "e-2"):
        row = rows[request_id]
        assert row["within"] > 6 and 4 <= row["explored_slot"] <= 6
        slot = row["explored_slot"] - 1
        assert row["propensities"][:3] == [1.0, 1.0, 1.0]
        assert row["propensities"][slot] == pytest.approx(1 / (3 * (row["within"] - 6)))
        others = [p for i, p in enumerate(row["propensities"][3:], 3) if i != slot]
        assert others == pytest.approx([1 - 1 / 3] * 2)
    assert rows["e-3"]["explored_slot"] is None and rows["e-3"]["propensities"] == [1.0] * 6
