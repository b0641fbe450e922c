"""Benchmark: what shadow scoring costs, side by side with it off.

    python bench/shadow.py --data DIR [--workers 1] [--rounds 6] [--seconds 6] [--connections 16]
                           [--rate 30] [--store redis|sqlite] [--share 0.5] [--start on|off]

Builds the serving artifacts of a reference dataset once: the seeded reference model as the
champion's export and a second seeded model as a challenger's export beside it, named in the
registry. Starts two ``pipeline serve`` of this checkout on them: ``on`` with
``PIPELINE_SHADOW_SHARE=--share`` (default 0.5, the setting's default: the challenger scores that
share of requests beside the champion, and the comparison is logged) and ``off`` with
``PIPELINE_SHADOW_SHARE=0``; both with no canary and the
impression log on (each its own). Then, ``--rounds`` times, the order swapped every round, a
``wrk`` capacity run and an open-loop latency run at ``--rate`` requests/s per side. Prints one
JSON object as its last line; ``cost`` is on minus off (p95 ms, CPU ms per request) and on over
off (requests/s). The targets: p95 at 30 requests/s and ``max_rps`` within 10% of shadow off.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from pipeline.model.export import publish_export
from pipeline.model.network import ClickMLP
from pipeline.release.registry import Decision, Registry
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

CHALLENGER = "bench-challenger"


def add_challenger(warehouse, sample_file: Path) -> None:
    """A second seeded model exported beside the live one and named challenger in the registry."""
    Registry(warehouse.registry).record(Decision("bench-champion", "champion", "bench", "the seeded model"),
                                        Decision(CHALLENGER, "challenger", "bench", "a second seeded model"))
    torch.manual_seed(1)
    publish_export(ClickMLP().eval(), warehouse.export, torch.from_numpy(np.load(sample_file)),
                   record={"checkpoint_version": CHALLENGER}, live=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    on_off_arguments(parser)
    parser.add_argument("--share", type=float, default=0.5, help="the on side's PIPELINE_SHADOW_SHARE")
    parser.add_argument("--start", choices=("on", "off"), default="on",
                        help="which server starts first (a side's place can bias it: run both)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install wrk")
    with tempfile.TemporaryDirectory(prefix="bench-shadow-") as tmp, contextlib.ExitStack() as stack:
        tmp_path = Path(tmp)
        store, settings = online_store(args.store, tmp_path, stack)
        warehouse, _ = serving_warehouse(args.data.resolve(), tmp_path / "warehouse", store)
        store.close()
        add_challenger(warehouse, tmp_path / "warehouse-sample.npy")
        requests = args.data / "requests.parquet"
        bodies, script = wrk_replay(requests, tmp_path)
        common = {**settings, "PIPELINE_CANARY_SHARE": "0"}
        order = (("on", str(args.share)), ("off", "0"))
        order = order if args.start == "on" else order[::-1]
        sides = {name: stack.enter_context(serving(warehouse, {
            **common, "PIPELINE_SHADOW_SHARE": share, "PIPELINE_IMPRESSION_LOG_DIR": str(tmp_path / f"log-{name}")},
            args.workers, log=tmp_path / f"{name}.log")) for name, share in order}
        capacity, latency, cpu = alternating_rounds(sides, script, bodies, requests, args.rounds, args.seconds,
                                                    args.connections, args.rate)
        shadowed = "challenger" in (tmp_path / "on.log").read_text()
        results = side_figures(capacity, latency, cpu, args.rate)
    cost = on_off_cost(results)
    print(json.dumps({"store": args.store, "workers": args.workers, "connections": args.connections,
                      "start": args.start, "share": args.share, "seconds": args.seconds, "rounds": args.rounds,
                      "challenger_loaded": shadowed,
                      "on": results["on"], "off": results["off"], "cost": cost, "machine": machine(),
                      "command": " ".join(["python", "bench/shadow.py", *sys.argv[1:]])}))


if __name__ == "__main__":
    main()
