"""What the benchmark scripts (bench/) share: the machine's description, and a role run in a fresh process.

Importing this module sets MKL's strict reproducibility (:mod:`pipeline.model.reproducible`), as the
pipeline's entry points do: every benchmark script imports it before its first matrix product."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

try:  # as the pipeline's entry points do, before any benchmark's first matrix product
    from pipeline.model.reproducible import enable_reproducible_blas
except ImportError:  # another commit's code from before it (bench/training.py --code): its parent set it
    pass
else:
    enable_reproducible_blas()
try:  # likewise, before ONNX Runtime loads: its telemetry off
    from pipeline.serving.telemetry import disable_onnxruntime_telemetry
except ImportError:  # another commit's code, from before the ONNX export
    pass
else:
    disable_onnxruntime_telemetry()


def machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cpus": os.cpu_count(), "mem_gib": round(mem_gib, 1),
            "python": platform.python_version()}


def run_role(script: str, *args: str) -> dict:
    """Run ``script --role …`` in a fresh process (own memory high-water mark); parse its JSON."""
    done = subprocess.run([sys.executable, script, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{script} {' '.join(args)} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
