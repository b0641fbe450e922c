"""Benchmark: the HTTP API under open-loop load, features in Redis (the issue's targets).

    python bench/api.py --data DIR --model PATH [--duration 60] [--ramp-step 10]

Builds the serving artifacts of a reference dataset (feature snapshots, geo index, the given
TorchScript model) in a temporary warehouse, loads a local redis-server, starts
``pipeline serve`` in its own process, then runs ``pipeline loadtest``'s generator: 30 requests/s
for ``--duration`` seconds, and a ramp to the highest rate with p95 ≤ 100 ms and no errors.
Reports the server's peak RSS. Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import machine  # noqa: E402
from pipeline.api.loadtest import DEFAULT_RAMP, ramp, run  # noqa: E402
from pipeline.data.layout import ReferenceDataset, Warehouse  # noqa: E402
from pipeline.data.warehouse_build import build_from_reference  # noqa: E402
from pipeline.geo.index import GeoIndex  # noqa: E402
from pipeline.model.export import MODEL_FILE  # noqa: E402
from pipeline.publish import write_audit_publish  # noqa: E402
from pipeline.store.base import FeatureTable  # noqa: E402
from pipeline.store.redis_server import free_port, local_redis_server  # noqa: E402
from pipeline.store.redis_store import RedisStore  # noqa: E402

START = date(2026, 1, 1)  # any: only the feature tables are used


def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--ramp-step", type=float, default=10.0, help="seconds per ramp step")
    args = parser.parse_args()
    data = args.data.resolve()
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp, local_redis_server() as redis_url:
        warehouse = Warehouse(Path(tmp) / "warehouse")
        users, restaurants = build_from_reference(ReferenceDataset(data, START), warehouse, days=0)
        GeoIndex.build(restaurants.ids, restaurants.locations[:, 0], restaurants.locations[:, 1]).publish(
            warehouse.geo_index, restaurants.ids)
        # the given model as the published export (no parity audit: there is no eager model here)
        write_audit_publish(warehouse.export, lambda staging: shutil.copy(args.model, staging / MODEL_FILE),
                            lambda staging, _: [])
        store = RedisStore(redis_url)
        store.publish(FeatureTable.of(users), FeatureTable.of(restaurants))
        store.close()
        del users, restaurants
        port = free_port()
        env = {**os.environ, "PIPELINE_WAREHOUSE_DIR": str(warehouse.root), "REDIS_URL": redis_url,
               "PIPELINE_ONLINE_STORE": "redis"}
        server = subprocess.Popen([str(Path(sys.executable).parent / "pipeline"), "serve", "--port", str(port)],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if urllib.request.urlopen(base + "/health", timeout=2).status == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the server did not become ready")
                time.sleep(0.2)
            requests = data / "requests.parquet"
            run(base, requests, 30, 3)  # warm-up
            steady = run(base, requests, 30, args.duration)
            print(json.dumps(steady), file=sys.stderr)
            ramped = ramp(base, requests, DEFAULT_RAMP, args.ramp_step, log=lambda m: print(m, file=sys.stderr))
            server_rss = _vm_hwm_mb(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=10)
    result = {**{k: steady[k] for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms", "achieved_rps", "errors")},
              "rate": 30, "duration_s": args.duration, "store": "redis", "max_rps": ramped["max_rps"],
              "ramp": [{k: s[k] for k in ("rate", "p50_ms", "p95_ms", "p99_ms", "achieved_rps", "errors")}
                       for s in ramped["steps"]],
              "server_peak_rss_mb": round(server_rss, 1), "machine": machine(),
              "command": " ".join(["python", "bench/api.py", *sys.argv[1:]])}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
