"""``pipeline loadtest``: an open-loop HTTP load generator replaying requests.parquet.

Request i is sent at ``start + i / rate`` whether or not earlier replies have come back (like the
reference's load test), and its latency counts from that moment. Non-2xx replies, timeouts and
connection errors are errors. ``--ramp`` runs steps of increasing rate and reports the highest
with p95 ≤ 100 ms and no errors (``max_rps``).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import numpy as np
import orjson
import pyarrow.parquet as pq
import uvloop

from pipeline.serving.loadgen import LoadResult

P95_BAR_MS = 100.0
DEFAULT_RAMP = (50, 100, 200, 300, 350, 400, 500, 600, 800, 1000, 1200, 1500)


def request_bodies(path: Path) -> list[tuple[str, bytes]]:
    """(path, JSON body) of every request in requests.parquet, encoded once up front."""
    out = []
    for r in pq.read_table(path).to_pylist():
        body = {k: r[k] for k in ("candidate_restaurant_ids", "latitude", "longitude", "size", "max_dist",
                                  "sort_dist")}
        out.append((f"/recommend/u{r['user_id']:05d}", orjson.dumps(body)))
    return out


async def _open_loop(url: str, bodies: list[tuple[str, bytes]], rate: float, duration_s: float,
                     timeout_s: float, answers: list | None = None, token: str = "",
                     answered_ids: list | None = None) -> LoadResult:
    """``answers``, if given, receives (due, seconds to answer, status; 0 for no answer) per request;
    ``token`` is sent as ``Authorization: Bearer`` (the API's PIPELINE_API_TOKEN); with
    ``answered_ids``, request i is sent with ``X-Request-Id: loadtest-<run>-i`` and each answered
    (2xx) id is appended to it (to find the answers in the impression log)."""
    total = max(1, int(rate * duration_s))
    latencies, errors = [], [0]
    loop_start = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=512, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s),
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {token}"} if token else {})}) as session:
        run_id = f"{time.time_ns():x}"

        async def send(path: str, body: bytes, due: float, i: int) -> None:
            status = 0
            request_id = f"loadtest-{run_id}-{i}" if answered_ids is not None else None
            try:
                async with session.post(url + path, data=body,
                                        headers={"X-Request-Id": request_id} if request_id else None) as response:
                    await response.read()
                    status = response.status
                    if response.status >= 300:
                        errors[0] += 1
                        return
                latencies.append(time.perf_counter() - due)
                if answered_ids is not None and request_id is not None:
                    answered_ids.append(request_id)
            except (TimeoutError, aiohttp.ClientError):
                errors[0] += 1
            finally:
                if answers is not None:
                    answers.append((due - loop_start, time.perf_counter() - due, status))

        tasks = []
        for i in range(total):
            due = loop_start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            path, body = bodies[i % len(bodies)]
            tasks.append(asyncio.create_task(send(path, body, due, i)))
        await asyncio.gather(*tasks)
        seconds = time.perf_counter() - loop_start
    return LoadResult(np.array(latencies) * 1000, errors[0], seconds)


def run(url: str, requests_file: Path, rate: float, duration_s: float, timeout_s: float = 10.0,
        answers: list | None = None, token: str = "", answered_ids: list | None = None) -> dict:
    bodies = request_bodies(requests_file)
    result = uvloop.run(_open_loop(url.rstrip("/"), bodies, rate, duration_s, timeout_s, answers, token,
                                   answered_ids))
    return {"rate": rate, "duration_s": duration_s, **result.summary()}


def ramp(url: str, requests_file: Path, rates: tuple[float, ...], step_s: float, log=print, token: str = "") -> dict:
    """Steps of increasing rate; stops at the first that misses p95 ≤ 100 ms or has errors."""
    steps, best = [], 0.0
    for rate in rates:
        step = run(url, requests_file, rate, step_s, token=token)
        steps.append(step)
        log(f"ramp {rate:>6.0f} rps: p95 {step['p95_ms']:.2f} ms, achieved {step['achieved_rps']:.0f} rps, "
            f"errors {step['errors']}")
        if step["errors"] or not step["p95_ms"] <= P95_BAR_MS:
            break
        best = rate
    last_ok = next((s for s in reversed(steps) if s["rate"] == best), steps[-1])
    return {**{k: last_ok[k] for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms", "achieved_rps", "errors")},
            "max_rps": best, "steps": steps}
