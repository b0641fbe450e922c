"""Benchmark: the HTTP API side by side with another checkout's, alternating, on the same artifacts.

    python bench/api_compare.py --data DIR --baseline CHECKOUT [--kind candidates|nearby]
                                [--workers 1] [--rounds 8] [--seconds 6] [--connections 16]
                                [--rate 30] [--store redis|sqlite] [--model-format onnx]

Builds the serving artifacts of a reference dataset once (feature snapshots, geo index, features
loaded into a local redis-server or a SQLite file), exports the seeded reference module twice, with
this checkout's code and with ``--baseline``'s (each server reads an export its own code wrote), and
starts ``pipeline serve`` from each checkout. Then, ``--rounds`` times, the order swapped every
round:

- **capacity**: ``wrk`` (closed loop, one thread, ``--connections`` connections, ``--seconds``
  seconds) replaying the requests; requests/s, p50/p95/p99 and errors (non-2xx, timeouts);
- **latency**: the open-loop generator of ``pipeline loadtest`` at ``--rate`` requests/s for
  ``--seconds`` seconds: p50/p95/p99 and errors.

``--kind candidates`` replays requests.parquet (1,000 candidates each); ``--kind nearby`` sends
the same users without a candidate list, at the city centre, ``max_dist`` ``--max-dist`` metres.
Each side reports the medians over rounds, the server's CPU ms per request over the capacity
runs, its workers' RSS after the run and how long it took to become ready; ``ratio`` is this
checkout's over the baseline's. ``--baseline-hide`` keeps modules the baseline's lock did not have
(default: hiredis) from its server. ``wrk`` is Debian's (``apt-get install wrk``). Prints one JSON
object as its last line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

from pipeline_devtools.benchmarks import machine
from pipeline_devtools.serving_bench import (
    alternating_rounds,
    median_of,
    nearby_requests,
    online_store,
    process_tree,
    serving,
    serving_warehouse,
    status_mb,
    wrk_replay,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--baseline", required=True, type=Path, help="a checkout (git worktree) of the baseline")
    parser.add_argument("--kind", choices=("candidates", "nearby"), default="candidates")
    parser.add_argument("--max-dist", type=float, default=20_000.0, help="metres, with --kind nearby")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rate", type=float, default=30.0, help="open-loop requests/s (0: skip)")
    parser.add_argument("--store", choices=("redis", "sqlite"), default="redis")
    parser.add_argument("--baseline-hide", nargs="*", default=["hiredis"],
                        help="modules the baseline's server may not import (packages its lock lacks)")
    parser.add_argument("--model-format", default="onnx", help="PIPELINE_API_MODEL_FORMAT of this checkout's server")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install wrk")
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp, contextlib.ExitStack() as stack:
        tmp_path = Path(tmp)
        store, settings = online_store(args.store, tmp_path, stack)
        warehouse, baseline = serving_warehouse(args.data.resolve(), tmp_path / "warehouse", store,
                                                baseline_code=args.baseline)
        store.close()
        assert baseline is not None
        requests = args.data / "requests.parquet"
        if args.kind == "nearby":
            requests = nearby_requests(requests, tmp_path / "nearby.parquet", args.max_dist)
        bodies, script = wrk_replay(requests, tmp_path)
        sides = {
            "now": stack.enter_context(serving(warehouse, {**settings, "PIPELINE_API_MODEL_FORMAT": args.model_format},
                                               args.workers, log=tmp_path / "now.log")),
            "baseline": stack.enter_context(serving(baseline, settings, args.workers, code=args.baseline,
                                                    log=tmp_path / "baseline.log",
                                                    hide=args.baseline_hide)),
        }
        ready = {name: round(process.ready_s, 2) for name, (_, process) in sides.items()}  # type: ignore[attr-defined]
        capacity, latency, cpu = alternating_rounds(sides, script, bodies, requests, args.rounds, args.seconds,
                                                    args.connections, args.rate)
        results = {}
        for name, (_, process) in sides.items():
            runs = capacity[name]
            results[name] = {
                "rps_median": median_of(runs, "rps"), "rps": [round(r["rps"]) for r in runs],
                "p95_ms_median": median_of(runs, "p95_ms"), "p99_ms_median": median_of(runs, "p99_ms"),
                "errors": sum(r["errors"] for r in runs),
                "cpu_ms_per_request": round(1000 * cpu[name] / sum(r["requests"] for r in runs), 3),
                "worker_rss_mb": [round(status_mb(pid, "VmRSS"), 1) for pid in process_tree(process.pid)],
                "ready_s": ready[name],
                **({"open_loop": {"rate": args.rate, **{k: median_of(latency[name], k) for k in
                                                         ("p50_ms", "p95_ms", "p99_ms")},
                                  "errors": sum(r["errors"] for r in latency[name])}} if args.rate else {}),
            }
    ratio = {"rps": round(results["now"]["rps_median"] / results["baseline"]["rps_median"], 3),
             "cpu_ms_per_request": round(results["now"]["cpu_ms_per_request"]
                                         / results["baseline"]["cpu_ms_per_request"], 3)}
    if args.rate:
        ratio["open_loop_p95"] = round(results["now"]["open_loop"]["p95_ms"]
                                       / results["baseline"]["open_loop"]["p95_ms"], 3)
    print(json.dumps({"kind": args.kind, **({"max_dist": args.max_dist} if args.kind == "nearby" else {}),
                      "store": args.store, "workers": args.workers, "connections": args.connections,
                      "seconds": args.seconds, "rounds": args.rounds, "baseline": str(args.baseline),
                      "baseline_hides": args.baseline_hide,
                      "now": results["now"], "baseline_side": results["baseline"], "ratio": ratio,
                      "machine": machine(), "command": " ".join(["python", "bench/api_compare.py", *sys.argv[1:]])}))


if __name__ == "__main__":
    main()
