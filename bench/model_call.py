"""Benchmark: the model call as the recommender makes it, side by side with another checkout.

    python bench/model_call.py [--compare-with CHECKOUT] [--sizes 20 1000 10000] [--repeats 4]

Each side, in a fresh process with its own code first on the path, exports the seeded reference
module as its export does (this checkout: the folded model, served as ONNX; a checkout from before
the folded export: TorchScript, its served format) and times what its ``Recommender.finish`` calls
to score one request, one thread: this checkout's ``ModelScorer.probabilities_for_user(user,
restaurants)``, an older one's ``probabilities(one_user(user, restaurants))`` — model input, model
and sigmoid, as the server runs them. p50 and p99 over 2,000 calls per size after 200 warm-up
calls; ``--repeats`` processes per side, alternating. Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from pipeline_devtools.benchmarks import machine

_CALL = """
import json, os, sys, tempfile, time
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
import numpy as np, torch
from pathlib import Path
from pipeline.model import export
from pipeline.model.network import ClickMLP
from pipeline.serving.scorer import ModelScorer
torch.set_num_threads(1)
torch.manual_seed(0)
model = ClickMLP().eval()
rng = np.random.default_rng(1)
user = rng.normal(0, 2, 30).astype(np.float32)
out = {}
with tempfile.TemporaryDirectory() as tmp:
    if hasattr(export, "write_formats"):
        export.write_formats(model, Path(tmp))
        scorer = ModelScorer(Path(tmp) / "model.onnx", fmt="onnx")
    else:
        export.export_torchscript(model, Path(tmp) / "model.pt")
        scorer = ModelScorer(Path(tmp) / "model.pt")
    if hasattr(scorer, "probabilities_for_user"):
        call = scorer.probabilities_for_user
    else:
        try:
            from pipeline.data.model_input import one_user
        except ImportError:  # before the serving side of the model input moved out of the torch code
            from pipeline.model.inputs import one_user
        call = lambda u, r: scorer.probabilities(one_user(u, r))
    for n in json.loads(sys.argv[1]):
        restaurants = rng.normal(0, 2, (n, 10)).astype(np.float32)
        for _ in range(200):
            call(user, restaurants)
        times = []
        for _ in range(2000):
            started = time.perf_counter(); call(user, restaurants); times.append(time.perf_counter() - started)
        times.sort()
        out[str(n)] = {"p50_ms": 1000 * times[1000], "p99_ms": 1000 * times[1980]}
    out["format"] = scorer.format if hasattr(scorer, "format") else "torchscript"
print(json.dumps(out))
"""


def side(code: Path | None, sizes: list[int]) -> dict:
    env = {**os.environ}
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code.resolve()), env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory() as cwd:  # -c puts the working directory first on the path
        done = subprocess.run([sys.executable, "-c", _CALL, json.dumps(sizes)], env=env, cwd=cwd,
                              capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare-with", type=Path)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 1000, 10000])
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    here = Path(__file__).resolve().parent.parent
    runs: dict[str, list[dict]] = {"now": [], "baseline": []}
    for repeat in range(args.repeats):
        order = ["now", "baseline"] if repeat % 2 == 0 else ["baseline", "now"]
        for name in order:
            if name == "baseline" and not args.compare_with:
                continue
            runs[name].append(side(here if name == "now" else args.compare_with, args.sizes))
    result = {name: {"format": one[0]["format"], **{str(n): {
        "p50_ms": [round(r[str(n)]["p50_ms"], 4) for r in one],
        "p50_ms_median": round(statistics.median(r[str(n)]["p50_ms"] for r in one), 4),
        "p99_ms_median": round(statistics.median(r[str(n)]["p99_ms"] for r in one), 4)} for n in args.sizes}}
        for name, one in runs.items() if one}
    print(json.dumps({**result, "baseline_code": str(args.compare_with) if args.compare_with else None,
                      "machine": machine(), "command": " ".join(["python", "bench/model_call.py", *sys.argv[1:]])}))


if __name__ == "__main__":
    main()
