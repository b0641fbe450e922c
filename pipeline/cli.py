"""The ``pipeline`` console command.

    pipeline generate --out DIR --preset {tiny,small,full} [--users N ...] [--seed S]
    pipeline days --data DIR [--start-date YYYY-MM-DD] [--format {json,range,tags}]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from pipeline.config import setting
from pipeline.data.generate import PRESETS, generate
from pipeline.data.layout import ReferenceDataset, parse_day


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
    dataset = ReferenceDataset(Path(args.data), parse_day(args.start_date))
    days = dataset.days()
    if not days:
        print(f"pipeline days: no train/train_NN.parquet under {args.data}", file=sys.stderr)
        return 1
    tags = {"dagster/asset_partition_range_start": days[0],
            "dagster/asset_partition_range_end": days[-1]}
    if args.format == "range":
        print(f"{days[0]}...{days[-1]}")
    elif args.format == "tags":
        print(json.dumps(tags))
    else:
        print(json.dumps({"first": days[0], "last": days[-1], "days": len(days), "tags": tags}))
    return 0


def build_parser() -> argparse.ArgumentParser:
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
    days = commands.add_parser("days", help="the click partitions (days) a dataset holds")
    days.add_argument("--data", required=True, help="reference-format dataset directory")
    days.add_argument("--start-date", default=setting("PIPELINE_START_DATE"),
                      help="day of shard 00 (default: $PIPELINE_START_DATE or 2026-01-01)")
    days.add_argument("--format", choices=("json", "range", "tags"), default="json",
                      help="range: FIRST...LAST; tags: dagster run tags for a ranged run")
    days.set_defaults(func=_days)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
