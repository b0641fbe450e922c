"""Benchmark: the exported formats' single-request latency, as the export asset measures it.

    python bench/export.py [--repeats 3] [--warehouse DIR] [--sizes 20 70 1000] [--compare-with CHECKOUT]

Writes every format of the folded model of record in ``--warehouse`` (default: the reference
module, seeded; latency does not depend on the weights) as the export does, and runs the export's
own verification: a fresh ``python -I`` process, 1 thread, that checks parity with the unfolded
eager model and times requests of one user against 20, 70 and 1,000 restaurants (``--sizes``;
p50/p99 over 300 calls each). ``--repeats`` fresh processes give the range. With
``--compare-with CHECKOUT`` each repeat also runs that checkout's export and verification of the
same seeded module, alternating (its code, its formats, its way of timing a request). Prints one
JSON object as its last line: per format and size the p50/p99 of each repeat, and which format the
export would name to serve each time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from pipeline_devtools.benchmarks import machine

# Another checkout's export and verification, in its own process (its code first on the path; run where no
# checkout lies, since ``-c`` puts the working directory first): the seeded module, the sample, the sizes.
_BASELINE = """
import json, sys, tempfile, torch
from pathlib import Path
from pipeline.model import export
from pipeline.model.network import ClickMLP
torch.manual_seed(0)
model = ClickMLP().eval()
sample = torch.load(sys.argv[1])
with tempfile.TemporaryDirectory() as tmp:
    if hasattr(export, "write_formats"):
        export.write_formats(model, Path(tmp))
    else:
        export.export_torchscript(model, Path(tmp) / "model.pt")
        export.export_program(model, Path(tmp) / "model.pt2")
    print(json.dumps(export.verify_export(Path(tmp), model, sample, sizes=tuple(json.loads(sys.argv[2])))))
"""


def baseline_run(checkout: Path, sample_file: Path, sizes: list[int]) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(checkout.resolve()),
                                                                      os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", _BASELINE, str(sample_file), json.dumps(sizes)], env=env,
                          cwd=sample_file.parent, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def latency_table(runs: list[dict], sizes: list[int]) -> dict:
    return {fmt: {str(n): {q: [round(r["formats"][fmt]["latency"][str(n)][q], 4) for r in runs]
                           for q in ("p50_ms", "p99_ms")} for n in sizes} for fmt in runs[0]["formats"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warehouse", type=Path, help="export this warehouse's model of record")
    parser.add_argument("--sizes", type=int, nargs="+", help="restaurants a timed request scores (default 20 70 1000)")
    parser.add_argument("--compare-with", type=Path, help="a checkout whose export to measure alternately")
    args = parser.parse_args()
    import torch

    from pipeline.data.layout import Warehouse
    from pipeline.model.checkpoint import load_checkpoint_model
    from pipeline.model.export import verify_export, write_formats
    from pipeline.model.network import ClickMLP
    from pipeline.serving.formats import LATENCY_ROWS, fastest

    torch.manual_seed(0)
    model = load_checkpoint_model(Warehouse(args.warehouse).checkpoint)[0] if args.warehouse else ClickMLP().eval()
    sizes = args.sizes or list(LATENCY_ROWS)
    sample = torch.randn(max(4096, *sizes), 40, generator=torch.Generator().manual_seed(1)) * 2
    runs, baseline_runs = [], []
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        ours = Path(tmp) / "ours"
        ours.mkdir()
        files = {f"{fmt}_bytes": size for fmt, size in write_formats(model, ours).items()}
        torch.save(sample, Path(tmp) / "sample.pt")
        for repeat in range(args.repeats):
            if args.compare_with and repeat % 2:
                baseline_runs.append(baseline_run(args.compare_with, Path(tmp) / "sample.pt", sizes))
            runs.append(verify_export(ours, model, sample, sizes=tuple(sizes)))
            if args.compare_with and not repeat % 2:
                baseline_runs.append(baseline_run(args.compare_with, Path(tmp) / "sample.pt", sizes))
    print(json.dumps({"latency_ms": latency_table(runs, sizes), **files,
                      "max_abs_diff": max(f["max_abs_diff"] for r in runs for f in r["formats"].values()),
                      "served": [fastest(r["formats"]) for r in runs],
                      **({"baseline": str(args.compare_with),
                          "baseline_latency_ms": latency_table(baseline_runs, sizes),
                          "baseline_served": [fastest(r["formats"]) for r in baseline_runs]}
                         if args.compare_with else {}),
                      "machine": machine(), "command": " ".join(["python", "bench/export.py", *sys.argv[1:]])}))


if __name__ == "__main__":
    main()
