"""Benchmark: generate a reference-format dataset (target for the full preset: < 2 min, < 2 GiB).

    python bench/generate.py --out DIR [--preset full]

The reference's own generator is a pure-Python loop at ~36k rows/s (~25 min for 50M train rows,
per dataset.md); it is not re-run here. Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pipeline.data.generate import PRESETS, generate
from pipeline_devtools.benchmarks import machine
from pipeline_devtools.process_metrics import peak_rss_mb

REFERENCE_ROWS_PER_S = 36_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full")
    args = parser.parse_args()
    spec = PRESETS[args.preset]
    started = time.perf_counter()
    generate(args.out, spec, progress=False)
    seconds = time.perf_counter() - started
    rows = (spec.train_files + spec.test_files) * spec.rows_per_file
    print(json.dumps({"preset": args.preset, "click_rows": rows, "seconds": round(seconds, 2),
                      "rows_per_s": round(rows / seconds), "peak_rss_mb": round(peak_rss_mb(), 1),
                      "reference_rows_per_s": REFERENCE_ROWS_PER_S, "machine": machine()}))


if __name__ == "__main__":
    main()
