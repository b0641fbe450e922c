"""The ``pipeline`` console command.

    pipeline generate --out DIR --preset {tiny,small,full} [--users N ...] [--seed S]
    pipeline days --data DIR [--start-date YYYY-MM-DD] [--format {json,range,tags}]
    pipeline serve [--host 127.0.0.1] [--port 8000] [--workers 1]
    pipeline status                       # what is live, and what it pairs with
    pipeline models                       # every model version: role, metrics, window, lineage
    pipeline promote VERSION --reason T   # make a version the champion (served to everyone)
    pipeline retire VERSION --reason T    # take a challenger or the champion out of service for good
    pipeline challenge VERSION --reason T # put a kept version on the canary (the judge decides)
    pipeline rollback {model,features}    # the former champion, or the previous feature version, again
    pipeline loadtest --url URL --requests FILE --rate R --duration S [--ramp]
    pipeline worker [--name N] [--concurrency C]   # a Celery worker (PIPELINE_EXECUTOR=celery)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path

from pipeline.data.generate import PRESETS, generate
from pipeline.data.layout import ReferenceDataset, parse_day
from pipeline.model.reproducible import enable_reproducible_blas
from pipeline.redaction import install_log_redaction, redact, redact_value
from pipeline.serving.telemetry import disable_onnxruntime_telemetry
from pipeline.settings import Settings, SettingsError, load_settings


def _generate(args: argparse.Namespace) -> int:
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(PRESETS[args.preset])
                 if getattr(args, f.name, None) is not None}
    try:
        spec = dataclasses.replace(PRESETS[args.preset], **overrides)
    except ValueError as exc:
        print(f"pipeline generate: {exc}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    summary = generate(args.out, spec, progress=not args.quiet)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    print(json.dumps(summary))
    return 0


def _days(args: argparse.Namespace) -> int:
    if args.served:
        from pipeline.feedback.log_format import logged_days

        log_dir = args.settings.feedback.log_dir(args.settings.paths.warehouse_dir)
        days = logged_days(log_dir)
        if not days:
            print(f"pipeline days: the impression log {log_dir} holds no day yet", file=sys.stderr)
            return 1
    elif not args.data:
        print("pipeline days: --data DATASET, or --served", file=sys.stderr)
        return 2
    else:
        days = ReferenceDataset(Path(args.data), parse_day(args.start_date)).days()
        if not days:
            print(f"pipeline days: no train/train_NN.parquet under {args.data}", file=sys.stderr)
            return 1
    if args.format == "last":
        print(days[-1])
        return 0
    tags = {"dagster/asset_partition_range_start": days[0],
            "dagster/asset_partition_range_end": days[-1]}
    if args.format == "range":
        print(f"{days[0]}...{days[-1]}")
    elif args.format == "tags":
        print(json.dumps(tags))
    else:
        print(json.dumps({"first": days[0], "last": days[-1], "days": len(days), "tags": tags}))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from pipeline.api.server import serve

    if args.workers < 1:
        raise SystemExit("--workers must be at least 1")
    serve(args.settings, args.host, args.port, args.workers, args.poll_interval)
    return 0


def _loadtest(args: argparse.Namespace) -> int:
    from pipeline.api.loadtest import DEFAULT_RAMP, ramp, run

    if args.ramp:
        rates = tuple(float(r) for r in args.ramp_rates.split(",")) if args.ramp_rates else DEFAULT_RAMP
        result = ramp(args.url, Path(args.requests), rates, args.duration, token=args.settings.api.token)
    else:
        result = run(args.url, Path(args.requests), args.rate, args.duration, token=args.settings.api.token)
        print(f"{result['requests']} requests at {result['achieved_rps']:.1f} rps: p50 {result['p50_ms']:.2f} ms, "
              f"p95 {result['p95_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, max {result['max_ms']:.2f} ms, "
              f"errors {result['errors']}")
    print(json.dumps(result))
    return 0 if result["errors"] == 0 else 1


def _simulate(args: argparse.Namespace) -> int:
    from pipeline.feedback.simulate import simulate

    settings = args.settings
    dataset = Path(args.data or settings.paths.dataset_dir)
    out = Path(args.out or settings.feedback.click_events_dir)
    try:
        summary = simulate(dataset, args.url, args.rate, args.duration, args.seed, out, args.size,
                           token=settings.api.token, wait_s=args.wait)
    except (ValueError, FileNotFoundError, TimeoutError) as error:
        print(f"pipeline simulate: {error}", file=sys.stderr)
        return 2
    expected = summary["expected"]
    print(f"{summary['answered']} of {summary['requests']} requests answered ({summary['errors']} errors, "
          f"{summary['skipped']} skipped), {summary['impressions']} impressions, {summary['clicks']} clicks; "
          f"CTR@5 {summary['ctr_at_5']:.3f} (expected: served {expected['served']['ctr_at_5']:.3f}, random "
          f"{expected['random']['ctr_at_5']:.3f}, best {expected['best']['ctr_at_5']:.3f}); click events in {out}",
          file=sys.stderr)
    print(json.dumps(summary))
    return 0 if summary["answered"] else 1


def _open_store(settings: Settings):
    from pipeline.store.factory import open_store

    store = settings.store
    return open_store(store.backend, store.redis_url, store.sqlite_path, redis_ca_file=store.redis_ca_file)


def _warehouse(settings: Settings):
    from pipeline.data.layout import Warehouse

    return Warehouse(Path(settings.paths.warehouse_dir).resolve())


def _status(args: argparse.Namespace) -> int:
    from pipeline.operations import status
    from pipeline.store.base import StoreUnavailable

    store = _open_store(args.settings)
    try:
        result = status(_warehouse(args.settings), store)
    except StoreUnavailable as unavailable:
        print(f"pipeline status: {redact(unavailable)}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(json.dumps(redact_value(result), indent=2))
    return 0


def _release(args: argparse.Namespace) -> int:
    """promote, retire, challenge: a release decision recorded with who took it and why."""
    from pipeline.locks import LockTimeout
    from pipeline.release import operations
    from pipeline.release.registry import operator

    decide = {"promote": operations.promote, "retire": operations.retire,
              "challenge": operations.challenge}[args.command]
    try:
        result = decide(_warehouse(args.settings), args.version, args.reason,
                        args.by or operator(args.settings.release.operator))
    except (operations.ReleaseError, FileNotFoundError, LockTimeout) as failed:
        print(f"pipeline {args.command}: {failed}", file=sys.stderr)
        return 1
    _mirror_roles(args.settings)
    print(json.dumps(result))
    return 0


def _mirror_roles(settings: Settings) -> None:
    """The roles mirrored to MLflow's aliases, when PIPELINE_MLFLOW_TRACKING_URI is set."""
    from pipeline.release.mlflow_mirror import mirror
    from pipeline.release.registry import Registry

    mirrored = mirror(settings.release.mlflow_tracking_uri, lambda message: print(message, file=sys.stderr))
    if mirrored is not None:
        mirrored.mirror_roles(Registry(_warehouse(settings).registry).roles())


def _models(args: argparse.Namespace) -> int:
    from pipeline.release.operations import models

    rows = models(_warehouse(args.settings))
    if args.format == "json":
        print(json.dumps(rows, indent=2, default=str))
        return 0
    print(f"{'version':<32} {'role':<16} {'accuracy':>8} {'auc':>7} {'ndcg@5':>7} {'days':>5}  decided")
    for row in rows:
        m = row["metrics"]
        figures = [f"{m[k]:.4f}" if isinstance(m.get(k), float) else "-" for k in ("accuracy", "auc", "ndcg_at_5")]
        print(f"{row['version']:<32} {row['role']:<16} {figures[0]:>8} {figures[1]:>7} {figures[2]:>7} "
              f"{row.get('trained_days', '-'):>5}  {row['decided_at']} by {row['decided_by']}: {row['reason']}")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from pipeline.locks import LockTimeout
    from pipeline.operations import rollback_features
    from pipeline.release.operations import ReleaseError, rollback
    from pipeline.release.registry import operator
    from pipeline.store.base import StoreUnavailable

    try:
        if args.what == "model":
            by = args.by or operator(args.settings.release.operator)
            result = rollback(_warehouse(args.settings), args.reason, by)
            _mirror_roles(args.settings)
        else:
            store = _open_store(args.settings)
            try:
                result = rollback_features(store)
            finally:
                store.close()
    except (FileNotFoundError, StoreUnavailable, LockTimeout, ReleaseError) as failed:
        print(f"pipeline rollback {args.what}: {redact(failed)}", file=sys.stderr)
        return 1
    print(json.dumps(redact_value(result)))
    return 0


def _worker(args: argparse.Namespace) -> int:
    from pipeline.worker import start

    return start(args.settings, args.name, args.concurrency, args.loglevel)


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="write a synthetic reference-format dataset")
    gen.add_argument("--out", required=True, help="dataset directory to write")
    gen.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    for name, help_text in (("users", "number of users"), ("restaurants", "number of restaurants"),
                            ("train_files", "train shards (one per day)"),
                            ("test_files", "held-out test files"),
                            ("rows_per_file", "click rows per train/test file"),
                            ("requests", "rows of requests.parquet"),
                            ("candidates", "candidate restaurants per request"),
                            ("seed", "random seed")):
        gen.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, help=help_text)
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(func=_generate)
    days = commands.add_parser("days", help="the click partitions (days) a dataset holds, or the API served")
    days.add_argument("--data", help="reference-format dataset directory")
    days.add_argument("--served", action="store_true",
                      help="the days the impression log holds ($PIPELINE_IMPRESSION_LOG_DIR) instead")
    days.add_argument("--start-date", default=settings.source.start_date,
                      help="day of shard 00 (default: $PIPELINE_START_DATE or 2026-01-01)")
    days.add_argument("--format", choices=("json", "range", "tags", "last"), default="json",
                      help="range: FIRST...LAST; tags: dagster run tags for a ranged run; last: the last day")
    days.set_defaults(func=_days)
    srv = commands.add_parser("serve", help="the recommendation API (artifacts and store from the pipeline's settings)")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--workers", type=int, default=1,
                     help="server processes sharing the port (default 1; one per core the API may use, "
                          "see docs/SERVING.md)")
    srv.add_argument("--poll-interval", type=float, default=None,
                     help="seconds between checks for a newly exported model or geo index "
                          "(default: $PIPELINE_API_POLL_INTERVAL_S or 1)")
    srv.set_defaults(func=_serve)
    show = commands.add_parser("status", help="what is live: every published artifact's version, what it pairs "
                                              "with, an unfinished training run, the online store's version")
    show.set_defaults(func=_status)
    back = commands.add_parser("rollback", help="model: retire the champion (and the challenger), the former "
                                                "champion serves again; features: the previous feature version")
    back.add_argument("what", choices=("model", "features"))
    back.add_argument("--reason", default="pipeline rollback model", help="why, for the record (model)")
    back.add_argument("--by", default=None, help="who decides, model (default: $PIPELINE_OPERATOR or the login name)")
    back.set_defaults(func=_rollback)
    for name, help_text in (("promote", "make a kept model version the champion: served to every user"),
                            ("retire", "take the challenger or the champion out of service for good (the champion: "
                                       "the former champion serves again); its retrain is not served again"),
                            ("challenge", "put a kept model version on the canary without the offline comparison "
                                          "(the judge decides on live traffic)")):
        decision = commands.add_parser(name, help=help_text)
        decision.add_argument("version", help="a checkpoint version (pipeline models)")
        decision.add_argument("--reason", required=True, help="why, for the record")
        decision.add_argument("--by", default=None, help="who decides (default: $PIPELINE_OPERATOR or the login name)")
        decision.set_defaults(func=_release)
    listing = commands.add_parser("models", help="every model version: role, metrics, training window, feature "
                                                 "versions, lineage, and the decision that gave it its role")
    listing.add_argument("--format", choices=("table", "json"), default="table")
    listing.set_defaults(func=_models)
    load = commands.add_parser("loadtest", help="open-loop load test replaying requests.parquet "
                                                "(sends $PIPELINE_API_TOKEN when set)")
    load.add_argument("--url", required=True, help="e.g. http://127.0.0.1:8000")
    load.add_argument("--requests", required=True, help="a requests.parquet")
    load.add_argument("--rate", type=float, default=30.0, help="requests per second")
    load.add_argument("--duration", type=float, default=60.0, help="seconds (per step with --ramp)")
    load.add_argument("--ramp", action="store_true", help="find the highest rate with p95 <= 100 ms and no errors")
    load.add_argument("--ramp-rates", default="", help="comma-separated rates for --ramp")
    load.set_defaults(func=_loadtest)
    sim = commands.add_parser("simulate", help=(
        "traffic from the synthetic population against a running API, clicks decided by the dataset's ground "
        "truth with position bias; writes click events (docs/SERVING.md, \"Closing the loop\")"))
    sim.add_argument("--url", required=True, help="e.g. http://127.0.0.1:8000")
    sim.add_argument("--rate", type=float, default=30.0, help="requests per second (at most 1000)")
    sim.add_argument("--duration", type=float, default=60.0, help="seconds (at most 86400)")
    sim.add_argument("--seed", type=int, default=0, help="the same seed and model give the same requests and clicks")
    sim.add_argument("--size", type=int, default=20, help="restaurants asked for per request")
    sim.add_argument("--wait", type=float, default=0.0, help="first wait up to this many seconds for /health")
    sim.add_argument("--data", default=None, help="the dataset (default: $PIPELINE_DATASET_DIR)")
    sim.add_argument("--out", default=None, help="click events directory (default: $PIPELINE_CLICK_EVENTS_DIR)")
    sim.set_defaults(func=_simulate)
    work = commands.add_parser("worker", help=(
        "a Celery worker taking the steps of runs that use PIPELINE_EXECUTOR=celery (checks the shared "
        "warehouse, data, store, Dagster storage and broker first)"))
    work.add_argument("--name", default=None, help="node name (default: pipeline-<random>); unique per machine")
    work.add_argument("--concurrency", type=int, default=None,
                      help="steps at once (default: $PIPELINE_WORKER_CONCURRENCY or 1)")
    work.add_argument("--loglevel", default="INFO")
    work.set_defaults(func=_worker)
    return parser


def _redacted_excepthook(kind, value, tb) -> None:
    """An uncaught error's traceback, with every credential masked."""
    sys.stderr.write(redact("".join(traceback.format_exception(kind, value, tb))))


def main(argv: list[str] | None = None) -> int:
    """Run a command on the settings parsed once here; its log lines and an uncaught error's traceback
    mask every credential. A setting that does not parse stops every command (exit status 2)."""
    enable_reproducible_blas()  # before any matrix product; the processes a command starts inherit it
    disable_onnxruntime_telemetry()  # before ONNX Runtime loads; likewise inherited
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    install_log_redaction()
    sys.excepthook = _redacted_excepthook
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"pipeline: {exc}", file=sys.stderr)
        return 2
    if settings.release.mlflow_tracking_uri:
        from pipeline.release.mlflow_mirror import bound_http

        bound_http(os.environ)
    args = build_parser(settings).parse_args(argv)
    args.settings = settings
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
