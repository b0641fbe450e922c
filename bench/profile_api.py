"""Benchmark: where a request's time goes in ``pipeline serve``, sampled under load.

    python bench/profile_api.py --data DIR [--kind candidates|nearby] [--rate 300] [--seconds 20]
                                [--max-dist 20000] [--store redis|sqlite] [--model-format onnx]

Builds the serving artifacts of a reference dataset (as bench/api_compare.py does), starts one
``pipeline serve`` worker, sends requests open loop at ``--rate`` per second (``candidates``:
requests.parquet, 1,000 candidates each; ``nearby``: its users without candidates at the city
centre, ``max_dist`` ``--max-dist``), and samples the worker with py-spy (``--rate-hz`` samples a
second, idle time left out). Each sample's stack is put in the stage of its innermost frame that
names one (``STAGES``): JSON parsing and validation, geo filtering, store reads, feature assembly,
scoring, ranking, serialisation, the route's own lines, metrics; the rest (uvicorn, Starlette,
FastAPI's routing and middleware, the event loop, the project's ASGI middleware) is framework.
Reports each stage's share of the busy samples and, with the server's CPU ms per request, its
CPU ms per request. Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from pipeline.api.loadtest import run
from pipeline_devtools.benchmarks import machine
from pipeline_devtools.serving_bench import cpu_seconds, nearby_requests, online_store, serving, serving_warehouse

# (stage, fragments of a py-spy frame "function (file:line)"); the innermost frame that has one decides
STAGES = (
    ("JSON parsing and validation", ("OrjsonRequest.json", "Request.json (starlette", "(json/", "pydantic",
                                     "request_body_to_args", "_validate_value_with_model_field",
                                     "RecommendBody.request")),
    ("geo filtering", ("Recommender.plan", "(pipeline/geo/")),
    ("store reads", ("read_async", "fetch_async", "fetch_user", "(redis/", "(hiredis", "(pipeline/store/",
                     "read_within", "HeldRestaurants", "asyncio/streams.py", "(sqlite3")),
    ("feature assembly", ("one_user",)),
    ("scoring", ("ModelScorer.", "onnxruntime", "(pipeline/serving/formats.py", "(torch/")),
    ("ranking", ("rank (pipeline/serving/recommender.py",)),
    ("serialisation", ("Answer.as_json", "starlette/responses.py")),
    ("metrics", ("prometheus_client",)),
    ("route's own lines", ("recommend (pipeline/api/routes.py", "Recommender.finish")),
)


def stage_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for stage, fragments in STAGES:
            if any(fragment in frame for fragment in fragments):
                return stage
    return "framework"


def shares(raw: Path) -> tuple[int, dict[str, float], list[tuple[str, float]]]:
    """(busy samples, share of each stage, the 15 leaf frames with most samples) of py-spy's raw output."""
    by_stage: collections.Counter[str] = collections.Counter()
    by_leaf: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():  # not a sample line
            continue
        frames, n = stack.split(";"), int(count)
        total += n
        by_stage[stage_of(frames)] += n
        by_leaf[frames[-1]] += n
    return (total, {stage: round(n / total, 4) for stage, n in by_stage.most_common()},
            [(leaf, round(n / total, 4)) for leaf, n in by_leaf.most_common(15)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--kind", choices=("candidates", "nearby"), default="candidates")
    parser.add_argument("--max-dist", type=float, default=20_000.0)
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate-hz", type=int, default=500, help="py-spy samples a second")
    parser.add_argument("--store", choices=("redis", "sqlite"), default="redis")
    parser.add_argument("--model-format", default="onnx")
    args = parser.parse_args()
    py_spy = Path(sys.executable).parent / "py-spy"
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp, contextlib.ExitStack() as stack:
        tmp_path = Path(tmp)
        store, settings = online_store(args.store, tmp_path, stack)
        warehouse, _ = serving_warehouse(args.data.resolve(), tmp_path / "warehouse", store)
        store.close()
        requests = args.data / "requests.parquet"
        if args.kind == "nearby":
            requests = nearby_requests(requests, tmp_path / "nearby.parquet", args.max_dist)
        base, process = stack.enter_context(serving(warehouse, {**settings, "PIPELINE_API_MODEL_FORMAT":
                                                                args.model_format}, log=tmp_path / "server.log"))
        run(base, requests, min(args.rate, 50), 3)  # warm-up
        raw = tmp_path / "profile.txt"
        sampler = subprocess.Popen([str(py_spy), "record", "--pid", str(process.pid), "--rate", str(args.rate_hz),
                                    "--duration", str(int(args.seconds) + 1), "--format", "raw", "--output", str(raw),
                                    "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        cpu_before = cpu_seconds(process.pid)
        load = run(base, requests, args.rate, args.seconds)
        cpu_ms = 1000 * (cpu_seconds(process.pid) - cpu_before) / max(load["requests"], 1)
        _, errors = sampler.communicate(timeout=60)
        if sampler.returncode:
            sys.exit(f"py-spy failed: {errors}")
        samples, stage_shares, leaves = shares(raw)
    print(json.dumps({
        "kind": args.kind, **({"max_dist": args.max_dist} if args.kind == "nearby" else {}), "store": args.store,
        "rate": args.rate, "achieved_rps": round(load["achieved_rps"], 1), "errors": load["errors"],
        "p50_ms": round(load["p50_ms"], 3), "p95_ms": round(load["p95_ms"], 3),
        "server_cpu_ms_per_request": round(cpu_ms, 3), "busy_samples": samples, "stage_shares": stage_shares,
        "stage_cpu_ms_per_request": {stage: round(share * cpu_ms, 3) for stage, share in stage_shares.items()},
        "top_leaf_frames": leaves, "machine": machine(),
        "command": " ".join(["python", "bench/profile_api.py", *sys.argv[1:]])}))


if __name__ == "__main__":
    main()
