"""Benchmark: the HTTP API under open-loop load, features in Redis (the project's latency targets).

    python bench/api.py --data DIR [--model PATH] [--model-format onnx] [--duration 60] [--ramp-step 10]
                        [--workers 1] [--pause-redis 10] [--server-code DIR]

Builds the serving artifacts of a reference dataset (feature snapshots, geo index, and the given
TorchScript model, or by default the seeded reference module exported in every format as the
pipeline exports it, served in ``--model-format``) in a temporary warehouse, loads a local redis-server, starts
``pipeline serve`` in its own process, then runs ``pipeline loadtest``'s generator: 30 requests/s
for ``--duration`` seconds, and a ramp to the highest rate with p95 ≤ 100 ms and no errors.
With ``--pause-redis S``: then 30 requests/s for S + 10 s with Redis stopped (SIGSTOP) for S
seconds in the middle, reporting how long the slowest answer took and the statuses, while
``/health`` is polled. ``--server-code DIR`` serves another checkout's code (a baseline) against
the same artifacts. ``--server granian`` serves the same app with granian instead of
``pipeline serve`` (a comparison; granian must be importable, e.g. on PYTHONPATH). Reports the
server's peak RSS, the format it serves, and for the 30 requests/s phase the rows scored and the
server's CPU ms per request (from ``/metrics`` and ``/proc``; rows scored only where the served code
counts them). Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from pipeline.api.loadtest import DEFAULT_RAMP, ramp, run
from pipeline.store.redis_store import RedisStore
from pipeline_devtools.benchmarks import machine
from pipeline_devtools.redis_server import redis_server
from pipeline_devtools.serving_bench import cpu_seconds, serving, serving_warehouse, status_mb


def _rows_scored(base: str) -> tuple[float, float] | None:
    """(sum, count) of the server's rows-scored histogram, or None where it has none."""
    text = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("recommend_rows_scored_"))
    if "recommend_rows_scored_sum" not in values:
        return None
    return float(values["recommend_rows_scored_sum"]), float(values["recommend_rows_scored_count"])


def _with_redis_paused(base: str, requests: Path, redis_process, pause_s: float) -> dict:
    """30 requests/s for pause_s + 10 s, Redis stopped from second 5 for pause_s seconds."""
    answers, health, stop = [], [], threading.Event()

    def pause_then_resume() -> None:
        time.sleep(5)
        redis_process.pause()
        time.sleep(pause_s)
        redis_process.resume()

    def poll_health() -> None:
        while not stop.wait(0.5):
            started = time.perf_counter()
            try:
                status = urllib.request.urlopen(base + "/health", timeout=10).status
            except urllib.error.HTTPError as error:
                status = error.code
            except OSError:
                status = 0
            health.append((time.perf_counter() - started, status))

    threads = [threading.Thread(target=pause_then_resume), threading.Thread(target=poll_health)]
    for thread in threads:
        thread.start()
    run(base, requests, 30, pause_s + 10, timeout_s=10, answers=answers)
    stop.set()
    for thread in threads:
        thread.join()
    during = [a for a in answers if 5 <= a[0] < 5 + pause_s]
    statuses = collections.Counter(str(a[2]) for a in during)
    return {"pause_s": pause_s, "requests_during_pause": len(during), "statuses_during_pause": dict(statuses),
            "slowest_answer_during_pause_s": round(max(a[1] for a in during), 3),
            "answered_within_1s_during_pause": sum(a[1] < 1 and a[2] != 0 for a in during),
            "answers_after_resume": dict(collections.Counter(str(a[2]) for a in answers if a[0] >= 5 + pause_s + 2)),
            "health_slowest_s": round(max((h[0] for h in health), default=float("nan")), 3),
            "health_statuses": sorted({h[1] for h in health})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--model", type=Path, help="a TorchScript file (default: the seeded reference module, "
                        "exported in every format)")
    parser.add_argument("--model-format", default="recorded", choices=("recorded", "onnx", "torchscript",
                                                                        "exported_program"),
                        help="PIPELINE_API_MODEL_FORMAT of the server (with the default model)")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--ramp-step", type=float, default=10.0, help="seconds per ramp step")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--pause-redis", type=float, default=0.0, help="seconds Redis is stopped (0: skip)")
    parser.add_argument("--server-code", type=Path, help="serve this checkout's code instead (a baseline)")
    parser.add_argument("--server", choices=("uvicorn", "granian"), default="uvicorn",
                        help="pipeline serve (uvicorn), or the same app on granian (a comparison)")
    args = parser.parse_args()
    data = args.data.resolve()
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp, redis_server() as redis_process:
        store = RedisStore(redis_process.url)
        warehouse, _ = serving_warehouse(data, Path(tmp) / "warehouse", store, model=args.model)
        store.close()
        settings = {"REDIS_URL": redis_process.url, "PIPELINE_ONLINE_STORE": "redis",
                    "PIPELINE_API_MODEL_FORMAT": args.model_format}
        command = None
        if args.server == "granian":  # its own bounds: headers within 5 s, at most 1000 requests at once
            command = [sys.executable, "-m", "granian", "--interface", "asgi", "--factory", "--port", "{port}",
                       "--http", "1", "--loop", "uvloop", "--http1-header-read-timeout", "5000",
                       "--backpressure", "1000", "--log-level", "warning", "pipeline.api.server:build_app",
                       *(["--workers", str(args.workers)] if args.workers != 1 else [])]
        with serving(warehouse, settings, args.workers, code=args.server_code, command=command,
                     log=Path(tmp) / "server.log") as (base, server):
            requests = data / "requests.parquet"
            run(base, requests, 30, 3)  # warm-up
            served_format = json.loads(urllib.request.urlopen(base + "/health", timeout=5).read()).get("model_format")
            cpu_before, scored_before = cpu_seconds(server.pid), _rows_scored(base)
            steady = run(base, requests, 30, args.duration)
            cpu_ms = 1000 * (cpu_seconds(server.pid) - cpu_before) / max(steady["requests"], 1)
            scored_after = _rows_scored(base)
            rows_scored = ((scored_after[0] - scored_before[0]) / max(scored_after[1] - scored_before[1], 1)
                           if scored_before and scored_after else None)
            print(json.dumps(steady), file=sys.stderr)
            ramped = ramp(base, requests, DEFAULT_RAMP, args.ramp_step, log=lambda m: print(m, file=sys.stderr))
            paused = _with_redis_paused(base, requests, redis_process, args.pause_redis) if args.pause_redis else None
            server_rss = status_mb(server.pid, "VmHWM")
    result = {**{k: steady[k] for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms", "achieved_rps", "errors")},
              "rate": 30, "duration_s": args.duration, "store": "redis", "max_rps": ramped["max_rps"],
              "ramp": [{k: s[k] for k in ("rate", "p50_ms", "p95_ms", "p99_ms", "achieved_rps", "errors")}
                       for s in ramped["steps"]],
              "workers": args.workers, "server": args.server, "redis_paused": paused,
              "served_format": served_format, "server_cpu_ms_per_request": round(cpu_ms, 3),
              "rows_scored_per_request": None if rows_scored is None else round(rows_scored, 1),
              "server_peak_rss_mb": round(server_rss, 1), "machine": machine(),
              "command": " ".join(["python", "bench/api.py", *sys.argv[1:]])}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
