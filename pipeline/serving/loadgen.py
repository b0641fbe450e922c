"""Replaying requests against a callable: open loop at a fixed rate, or as fast as possible.

Open loop means request i is due at ``start + i / rate`` whatever happened to earlier ones, and
its latency is measured from when it was due, so time spent waiting behind a slow request counts
(no coordinated omission), as in the reference's load test.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

T = TypeVar("T")  # a request, whatever ``call`` takes


@dataclass
class LoadResult:
    latencies_ms: np.ndarray
    errors: int
    seconds: float
    cpu_seconds: float | None = None  # this process's CPU time (all threads) while it ran the calls

    @property
    def requests(self) -> int:
        return len(self.latencies_ms) + self.errors

    def summary(self) -> dict[str, float]:
        lat = self.latencies_ms if len(self.latencies_ms) else np.array([np.nan])
        return {"requests": self.requests, "errors": self.errors,
                "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
                "p99_ms": float(np.percentile(lat, 99)), "max_ms": float(np.max(lat)),
                "achieved_rps": self.requests / self.seconds if self.seconds > 0 else 0.0,
                **({"cpu_ms_per_request": 1000 * self.cpu_seconds / self.requests if self.requests else 0.0}
                   if self.cpu_seconds is not None else {})}


def open_loop(call: Callable[[T], object], requests: Sequence[T], rate: float, duration_s: float) -> LoadResult:
    """Send ``rate`` requests per second for ``duration_s`` seconds, cycling through ``requests``."""
    total = max(1, int(rate * duration_s))
    latencies, errors = [], 0
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        try:
            call(requests[i % len(requests)])
            latencies.append(time.perf_counter() - due)
        except Exception:  # counted, never raised: a load test reports errors
            errors += 1
    return LoadResult(np.array(latencies) * 1000, errors, time.perf_counter() - start, time.process_time() - cpu)


def closed_loop(call: Callable[[T], object], requests: Sequence[T], count: int) -> LoadResult:
    """Send ``count`` requests back to back; the achieved rate is the maximum throughput."""
    latencies, errors = [], 0
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(count):
        sent = time.perf_counter()
        try:
            call(requests[i % len(requests)])
            latencies.append(time.perf_counter() - sent)
        except Exception:
            errors += 1
    return LoadResult(np.array(latencies) * 1000, errors, time.perf_counter() - start, time.process_time() - cpu)
