"""Benchmark: the exported formats' single-request latency, as the export asset measures it.

    python bench/export.py [--repeats 3] [--warehouse DIR]

Writes every format of the folded model of record in ``--warehouse`` (default: the reference
module, seeded; latency does not depend on the weights) as the export does, and runs the export's
own verification: a fresh ``python -I`` process, 1 thread, that checks parity with the unfolded
eager model and times requests of 20, 70 and 1,000 rows (p50/p99 over 300 calls each). ``--repeats``
fresh processes give the range. Prints one JSON object as its last line: per format and size the
p50/p99 of each repeat, and which format the export would name to serve each time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from pipeline_devtools.benchmarks import machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warehouse", type=Path, help="export this warehouse's model of record")
    args = parser.parse_args()
    import torch

    from pipeline.data.layout import Warehouse
    from pipeline.model.checkpoint import load_checkpoint_model
    from pipeline.model.export import verify_export, write_formats
    from pipeline.model.network import ClickMLP
    from pipeline.serving.formats import LATENCY_ROWS, fastest

    torch.manual_seed(0)
    model = load_checkpoint_model(Warehouse(args.warehouse).checkpoint)[0] if args.warehouse else ClickMLP().eval()
    sample = torch.randn(4096, 40, generator=torch.Generator().manual_seed(1)) * 2
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        sizes = {f"{fmt}_bytes": size for fmt, size in write_formats(model, Path(tmp)).items()}
        for _ in range(args.repeats):
            runs.append(verify_export(Path(tmp), model, sample))
    latency = {fmt: {str(n): {q: [round(r["formats"][fmt]["latency"][str(n)][q], 4) for r in runs]
                              for q in ("p50_ms", "p99_ms")} for n in LATENCY_ROWS}
               for fmt in runs[0]["formats"]}
    print(json.dumps({"latency_ms": latency, **sizes,
                      "max_abs_diff": max(f["max_abs_diff"] for r in runs for f in r["formats"].values()),
                      "served": [fastest(r["formats"]) for r in runs],
                      "machine": machine(), "command": " ".join(["python", "bench/export.py", *sys.argv[1:]])}))


if __name__ == "__main__":
    main()
