"""A backfill of the click assets (raw_clicks + processed_clicks) over N days, two ways.

- ``single``: one run over the whole range, as ``BackfillPolicy.single_run()`` makes it
  (``dg launch --job ingest_clicks --partition-range FIRST...LAST``).
- ``multi``: runs of ``--per-run`` days, ``--concurrent`` at a time, as
  ``BackfillPolicy.multi_run(per_run)`` with ``max_concurrent_runs`` makes them through the run
  queue. Each run is the same ``dg launch`` over its days; the daemon's queueing delay (a few
  seconds per run) is not included, so this form is measured at its best.

``--executor celery`` runs the steps on ``--workers`` real ``pipeline worker`` processes over a
throwaway redis-server broker (started before the clock, ready before it starts); the default is the
multiprocess executor. Each mode gets a fresh warehouse and DAGSTER_HOME with the feature snapshots
already published (not timed). Prints one JSON line: seconds, runs, days, rows, rows/s and the
peak resident size of the largest process (a run, a step process or a worker).

    python bench/backfill.py --data DIR --mode single|multi [--days N] [--per-run 8] [--concurrent 2]
                             [--executor multiprocess|celery] [--workers 2]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

from pipeline.data.layout import ReferenceDataset, parse_day
from pipeline.data.processed_partition import read_manifest
from pipeline_devtools.benchmarks import machine
from pipeline_devtools.celery_workers import celery_workers
from pipeline_devtools.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _launch(env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "dg"), "launch", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait(process: subprocess.Popen) -> None:
    _, err = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"dg launch failed:\n{err[-3000:]}")


@contextlib.contextmanager
def _celery_workers(env: dict, workers: int, scratch: Path):
    """A redis-server broker and ``workers`` worker processes, ready; stopped afterwards."""
    broker = RedisServer(str(scratch)).start()
    env["PIPELINE_CELERY_BROKER_URL"] = broker.url
    try:
        with celery_workers(env, [f"bench-{i}" for i in range(workers)], scratch):
            yield
    finally:
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--mode", choices=("single", "multi"), required=True)
    parser.add_argument("--days", type=int, default=0, help="the first N days (default: all)")
    parser.add_argument("--per-run", type=int, default=8)
    parser.add_argument("--concurrent", type=int, default=2)
    parser.add_argument("--start-date", default="2026-01-01")
    parser.add_argument("--executor", choices=("multiprocess", "celery"), default="multiprocess")
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes (--executor celery)")
    args = parser.parse_args()

    days = ReferenceDataset(args.data.resolve(), parse_day(args.start_date)).days()
    days = days[:args.days] if args.days else days
    with tempfile.TemporaryDirectory(prefix="backfill-") as scratch:
        home = Path(scratch) / "home"
        home.mkdir()
        (home / "dagster.yaml").write_text((ROOT / "deploy/dagster.yaml").read_text())
        with dg.DagsterInstance.from_config(str(home)):
            pass  # the instance exists before any worker starts (workers never create one)
        env = {**os.environ, "DAGSTER_HOME": str(home), "PIPELINE_DATASET_DIR": str(args.data.resolve()),
               "PIPELINE_WAREHOUSE_DIR": str(Path(scratch) / "warehouse"), "PIPELINE_START_DATE": args.start_date,
               "PIPELINE_END_DATE": days[-1], "VIRTUAL_ENV": str(BIN.parent),
               "PATH": f"{BIN}:{os.environ['PATH']}", "PIPELINE_EXECUTOR": args.executor,
               "PIPELINE_SQLITE_PATH": str(Path(scratch) / "online/features.db")}
        (Path(scratch) / "warehouse").mkdir()
        (Path(scratch) / "online").mkdir()
        workers = _celery_workers(env, args.workers, Path(scratch)) if args.executor == "celery" \
            else contextlib.nullcontext()
        with workers:
            seconds, groups = _backfill(env, args, days)
        rows = sum(read_manifest(Path(scratch) / f"warehouse/processed_clicks/date={d}")["rows"] for d in days)
    print(json.dumps({"bench": "backfill", "mode": args.mode, "executor": args.executor,
                      "workers": args.workers if args.executor == "celery" else None, "days": len(days),
                      "runs": len(groups), "per_run": len(groups[0]),
                      "concurrent": 1 if args.mode == "single" else args.concurrent,
                      "seconds": round(seconds, 2), "rows": rows, "rows_per_s": round(rows / seconds),
                      # the largest single process among the runs, their step processes and the workers
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
                      "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": machine()}))


def _backfill(env: dict, args: argparse.Namespace, days: list[str]) -> tuple[float, list[list[str]]]:
    """Feature snapshots (not timed), then the backfill; its seconds and its runs' days."""
    _wait(_launch(env, "--job", "feature_snapshots"))

    started = time.perf_counter()
    if args.mode == "single":
        groups = [days]
    else:
        groups = [days[i:i + args.per_run] for i in range(0, len(days), args.per_run)]
    running: list[subprocess.Popen] = []
    for group in groups:
        while len(running) >= (1 if args.mode == "single" else args.concurrent):
            _wait(running.pop(0))
        running.append(_launch(env, "--job", "ingest_clicks", "--partition-range", f"{group[0]}...{group[-1]}"))
    for process in running:
        _wait(process)
    return time.perf_counter() - started, groups


if __name__ == "__main__":
    main()
