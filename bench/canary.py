"""Benchmark: how much traffic the canary's judge needs to decide, and whether any request fails.

    python bench/canary.py [--data DIR] [--share 0.2] [--rate 100] [--step 4] [--workers 2]

For each case (a better challenger: a well-trained model against an undertrained champion; a
worse one: the reverse), builds a champion and a challenger of the dataset (default: a freshly
generated tiny one), serves them with ``pipeline serve`` (``--workers``, canary share ``--share``),
sends simulated traffic in steps of ``--step`` seconds at ``--rate`` requests/s and runs the judge
(the default policy) after each step, until it promotes or retires the challenger. Prints one JSON
object as its last line: per case, the decision, the canary's and the champion's requests and
impressions at the decision, the seconds of traffic, errors, and the switch's time on both workers.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from pipeline.data.generate import generate
from pipeline.data.layout import ReferenceDataset
from pipeline.release.judge import Policy
from pipeline_devtools.api_process import ApiProcess, health
from pipeline_devtools.benchmarks import machine
from pipeline_devtools.canary import champion_and_challenger, judge_on_traffic
from pipeline_devtools.datasets import TINY
from pipeline_devtools.serving_bench import START


def switch_seconds(api: ApiProcess, decided_at: float, expected: str) -> float:
    """Seconds from the decision until two workers in a row answered /health serving ``expected``
    with no challenger."""
    pids = set()
    while len(pids) < 2:
        body = health(api.base)
        if body["model_version"] == expected and body["challenger"] is None:
            pids.add(body["pid"])
        elif body["pid"] in pids:
            pids.discard(body["pid"])
        time.sleep(0.02)
    return time.monotonic() - decided_at


def case(dataset: ReferenceDataset, root: Path, better: bool, args) -> dict:
    warehouse, env = champion_and_challenger(dataset, root, better)
    api = ApiProcess(root, {**env, "PIPELINE_CANARY_SHARE": str(args.share)}, workers=args.workers,
                     poll_interval_s=1.0)
    try:
        api.wait_until()
        champion = health(api.base)["model_version"]
        challenger = health(api.base)["challenger"]["version"]
        run = judge_on_traffic(dataset, warehouse, api.base, root / "clicks", Policy(), args.rate, args.step)
        verdict = run.verdicts[-1]
        switched = switch_seconds(api, run.decided_at, challenger if verdict.action == "promote" else champion) \
            if run.decision else None
    finally:
        api.stop()
    return {"challenger": "better" if better else "worse", "decision": verdict.action,
            "canary_users": verdict.challenger.users, "champion_users": verdict.champion.users,
            "canary_requests": verdict.challenger.requests, "canary_impressions": verdict.challenger.impressions,
            "champion_requests": verdict.champion.requests, "champion_impressions": verdict.champion.impressions,
            "ctr_at_5": {"challenger": round(verdict.challenger.ctr, 4), "champion": round(verdict.champion.ctr, 4)},
            "bounds": [round(verdict.lower, 4), round(verdict.upper, 4)], "requests_sent": run.requests,
            "traffic_seconds": round(run.seconds, 1), "failed_requests": run.errors,
            "switch_seconds": round(switched, 2) if switched is not None else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--share", type=float, default=0.2)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--step", type=float, default=4.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-canary-") as tmp:
        tmp_path = Path(tmp)
        if args.data is None:
            generate(tmp_path / "dataset", TINY, progress=False)
        dataset = ReferenceDataset(args.data or tmp_path / "dataset", START)
        results = [case(dataset, tmp_path / name, better, args) for name, better in (("better", True),
                                                                                     ("worse", False))]
    print(json.dumps({"share": args.share, "rate": args.rate, "workers": args.workers, "policy": vars(Policy()),
                      "cases": results, "machine": machine(),
                      "command": " ".join(["python", "bench/canary.py", *sys.argv[1:]])}))


if __name__ == "__main__":
    main()
