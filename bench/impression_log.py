"""Benchmark: what the impression log costs, side by side with logging off, and how much of the
traffic it keeps.

    python bench/impression_log.py --data DIR [--workers 1] [--rounds 6] [--seconds 6]
                                   [--connections 16] [--rate 30] [--store redis|sqlite]

Builds the serving artifacts of a reference dataset once and starts two ``pipeline serve`` of this
checkout on them, one with ``PIPELINE_IMPRESSION_LOG=on`` (its log in a scratch directory) and
one with it ``off``. Then, ``--rounds`` times, the order swapped every round:

- **capacity**: ``wrk`` closed loop (``--connections`` connections, ``--seconds`` seconds) replaying
  requests.parquet: requests/s (the ``max_rps`` the issue's 5% budget is of), server CPU per request;
- **latency**: the open-loop generator of ``pipeline loadtest`` at ``--rate`` requests/s: p50/p95/p99.

Then completeness: a fresh logging server (its own log) takes ``--complete-seconds`` of open-loop
traffic at ``--rate`` requests/s, each request with its own ``X-Request-Id``, and is stopped with
SIGTERM; every answered request should be in its log once (``complete.logged_share``,
``complete.repeated_ids``). Prints one JSON object as its last line; ``cost`` is on minus off
(p95 ms at the open-loop rate, CPU ms per request) and on over off (requests/s).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

import polars as pl

from pipeline.api.loadtest import run
from pipeline.feedback.log_format import logged_days, read_segment, segments
from pipeline_devtools.benchmarks import machine
from pipeline_devtools.serving_bench import (
    alternating_rounds,
    on_off_arguments,
    on_off_cost,
    online_store,
    serving,
    serving_warehouse,
    side_figures,
    wrk_replay,
)


def completeness(warehouse, settings: dict, args, requests: Path, log_dir: Path) -> dict:
    """A fresh logging server under open-loop traffic with request ids, stopped with SIGTERM: how
    many of the answered requests its log holds, and how many ids it holds twice."""
    answered: list[str] = []
    with serving(warehouse, {**settings, "PIPELINE_IMPRESSION_LOG": "on", "PIPELINE_IMPRESSION_LOG_DIR": str(log_dir)},
                 args.workers) as (base, _):
        result = run(base, requests, args.rate, args.complete_seconds, answered_ids=answered)
    files = [path for day in logged_days(log_dir) for path in segments(log_dir, day)]
    ids = pl.concat([pl.from_arrow(read_segment(p)).select("request_id") for p in files]).get_column("request_id") \
        if files else pl.Series([], dtype=pl.String)
    found = len(set(answered) & set(ids.to_list()))
    return {"rate": args.rate, "seconds": args.complete_seconds, "sent": result["requests"],
            "answered": len(answered), "logged": len(ids), "segments": len(files),
            "logged_share": round(found / len(answered), 5) if answered else 0.0,
            "repeated_ids": len(ids) - ids.n_unique()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    on_off_arguments(parser)
    parser.add_argument("--complete-seconds", type=float, default=60.0)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install wrk")
    with tempfile.TemporaryDirectory(prefix="bench-log-") as tmp, contextlib.ExitStack() as stack:
        tmp_path = Path(tmp)
        store, settings = online_store(args.store, tmp_path, stack)
        warehouse, _ = serving_warehouse(args.data.resolve(), tmp_path / "warehouse", store)
        store.close()
        requests = args.data / "requests.parquet"
        bodies, script = wrk_replay(requests, tmp_path)
        sides = {
            "on": stack.enter_context(serving(warehouse, {
                **settings, "PIPELINE_IMPRESSION_LOG": "on", "PIPELINE_IMPRESSION_LOG_DIR": str(tmp_path / "log")},
                args.workers, log=tmp_path / "on.log")),
            "off": stack.enter_context(serving(warehouse, {**settings, "PIPELINE_IMPRESSION_LOG": "off"},
                                               args.workers, log=tmp_path / "off.log")),
        }
        capacity, latency, cpu = alternating_rounds(sides, script, bodies, requests, args.rounds, args.seconds,
                                                    args.connections, args.rate)
        complete = completeness(warehouse, settings, args, requests, tmp_path / "complete")
        results = side_figures(capacity, latency, cpu, args.rate)
    cost = on_off_cost(results)
    print(json.dumps({"store": args.store, "workers": args.workers, "connections": args.connections,
                      "seconds": args.seconds, "rounds": args.rounds, "on": results["on"], "off": results["off"],
                      "cost": cost, "complete": complete, "machine": machine(),
                      "command": " ".join(["python", "bench/impression_log.py", *sys.argv[1:]])}))


if __name__ == "__main__":
    main()
