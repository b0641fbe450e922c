"""Benchmark: memory and time of closing one day at the reference's traffic, as the assets do it.

    python bench/feedback_memory.py [--requests 2592000] [--shown 20] [--ctr 0.29]

Writes a synthetic impression log of ``--requests`` answers (30 requests/s for a day is 2,592,000)
of ``--shown`` restaurants each through the API's writer (segments of 5,000), and click events on
a ``--ctr`` share of the shown restaurants; then collects the day (``impressions``), labels it
(``labeled_impressions``) and computes its online metrics (``online_metrics``), each in a fresh
process whose peak RSS is read from the kernel. Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.feedback import click_events
from pipeline.feedback.log_format import Impression
from pipeline.feedback.log_writer import ImpressionLog
from pipeline_devtools.benchmarks import machine

DAY = "2026-12-06"
STEPS = {
    "impressions": "from pipeline.feedback import impressions; "
                   "impressions.publish(Path(a[1]) / 'log', a[3], Path(a[1]) / 'impressions')",
    "labeled_impressions": "from pipeline.feedback import labels, impressions; "
                           "from pipeline.publish import Artifact; "
                           "c = labels.Clicks.scan(Path(a[2])); "
                           "labels.publish(impressions.path(Artifact(Path(a[1]) / 'impressions').live()), c, None, "
                           "a[3], Path(a[1]) / 'labeled', {}, ranks=1)",
    "online_metrics": "from pipeline.feedback import labels; from pipeline.feedback.online_metrics import "
                      "online_metrics, ctr_by_rank; from pipeline.publish import Artifact; "
                      "rows = labels.scan(Artifact(Path(a[1]) / 'labeled').live()); "
                      "print(online_metrics(rows, 100000)['all']['ctr_at_5'], file=sys.stderr); ctr_by_rank(rows)",
}


def run_step(code: str, root: Path, clicks: Path) -> dict:
    # VmHWM, not getrusage: a child forked from this (large) process would report this one's peak
    script = f"import sys; from pathlib import Path; a = sys.argv; {code}; " \
             "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script, str(root), str(clicks), DAY], capture_output=True, text=True,
                          check=True)
    return {"seconds": round(time.perf_counter() - started, 2),
            "peak_rss_mb": round(int(done.stdout.strip().splitlines()[-1]) / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2_592_000)
    parser.add_argument("--shown", type=int, default=20)
    parser.add_argument("--ctr", type=float, default=0.29)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="bench-feedback-") as tmp:
        root = Path(tmp)
        log = ImpressionLog(root / "log", flush_s=3600, flush_records=5000, capacity=10_000)
        at = int(time.mktime(time.strptime(DAY, "%Y-%m-%d")) * 1e9) + 3600 * 10**9
        started = time.perf_counter()
        clicked_ids, clicked_restaurants = [], []
        scores = np.linspace(0.95, 0.3, args.shown, dtype=np.float32)
        metres = np.full(args.shown, 900.0, np.float32)
        for n in range(args.requests):
            ids = rng.integers(0, 100_000, args.shown)
            log.add(Impression(f"bench-{n:x}", at + n * 33_000_000 // 1000 * 1000, int(rng.integers(0, 10**6)),
                               "m1", "onnx", 7, "g1", 13.7, 100.5, args.shown, 5000.0, False, 1000, 45, ids, scores,
                               metres, None, None))
            if log.queued >= 5000:
                log.flush()
            hit = rng.random(args.shown) < args.ctr
            clicked_ids += [f"bench-{n:x}"] * int(hit.sum())
            clicked_restaurants += ids[hit].tolist()
        log.flush()
        clicks = root / "clicks.parquet"
        stamps = [at // 1000] * len(clicked_ids)
        click_events.write(clicks, click_events.table(clicked_ids, clicked_restaurants, stamps))
        written_s = time.perf_counter() - started
        del clicked_ids, clicked_restaurants, stamps
        steps = {name: run_step(code, root, clicks) for name, code in STEPS.items()}
    print(json.dumps({"requests": args.requests, "shown": args.shown, "labeled_rows": args.requests * args.shown,
                      "segments": log.segments, "log_written_s": round(written_s, 1), "steps": steps,
                      "machine": machine(),
                      "command": " ".join(["python", "bench/feedback_memory.py", *sys.argv[1:]])}))


if __name__ == "__main__":
    main()
