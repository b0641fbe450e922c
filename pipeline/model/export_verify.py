"""An export's check in a fresh process: each format loaded where this project is not importable,
its logits compared with the eager model's, its single-request latency measured."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from pipeline.serving.formats import FORMAT_FILES, LATENCY_ROWS
from pipeline.settings import PublishingSettings

# Runs with `python -I` (no PYTHONPATH, no user site, no cwd on sys.path) and imports only torch and
# onnxruntime: it proves the artifacts load where the project is not installed. One thread, as served.
# ONNX Runtime's telemetry is turned off in it whoever started it (pipeline.serving.telemetry).
_VERIFY = r"""
import json, os, sys, time, warnings
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
import torch
warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning)
torch.set_num_threads(1)
directory, sample_path, expected_path, sizes = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
x, expected = torch.load(sample_path), torch.load(expected_path)


def onnx_model(path):
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return lambda rows: torch.from_numpy(session.run(None, {"x": rows.numpy()})[0])


loaders = {"torchscript": lambda p: torch.jit.load(p).eval(),
           "exported_program": lambda p: torch.export.load(p).module(), "onnx": onnx_model}
files = json.loads(sys.argv[5])
out = {"formats": {}}
for fmt, file in files.items():
    model = loaders[fmt](directory + "/" + file)
    with torch.inference_mode():
        got = model(x)
        latency = {}
        for n in sizes:
            request = x[:n].contiguous()
            for _ in range(30):
                model(request)
            times = []
            for _ in range(300):
                t = time.perf_counter(); model(request); times.append(time.perf_counter() - t)
            times.sort()
            latency[str(n)] = {"p50_ms": 1000 * times[len(times) // 2], "p99_ms": 1000 * times[int(len(times) * 0.99)]}
    difference = got - expected  # relative to max(1, |logit|): pipeline.serving.formats.parity_difference
    out["formats"][fmt] = {"shape_ok": list(got.shape) == [x.shape[0]],
                           "max_abs_diff": float(difference.abs().max()),
                           "parity_difference": float((difference.abs() / expected.abs().clamp_min(1)).max()),
                           "latency": latency}
out["imported_project"] = any(m == "pipeline" or m.startswith("pipeline.") for m in sys.modules)
print(json.dumps(out))
"""


class VerificationTimeout(TimeoutError):
    """The fresh process checking an export did not finish in time (it was killed)."""


def verify_export(directory: Path, model: torch.nn.Module, sample: torch.Tensor,
                  formats: tuple[str, ...] = tuple(FORMAT_FILES), sizes: tuple[int, ...] = LATENCY_ROWS,
                  timeout_s: float = PublishingSettings().export_verify_timeout_s) -> dict:
    """Load each format's file in ``directory`` in a fresh interpreter, compare its logits with the
    eager ``model``'s on ``sample`` [n, 40], and time single requests of ``sizes`` rows (p50/p99).
    The interpreter is killed after ``timeout_s`` (``PIPELINE_EXPORT_VERIFY_TIMEOUT_S``):
    :class:`VerificationTimeout`."""
    with torch.inference_mode():
        expected = model.eval()(sample)
    with tempfile.TemporaryDirectory(prefix="verify-") as tmp:
        sample_path, expected_path = Path(tmp) / "x.pt", Path(tmp) / "y.pt"
        torch.save(sample.contiguous(), sample_path)
        torch.save(expected, expected_path)
        files = {f: FORMAT_FILES[f] for f in formats}
        try:
            done = subprocess.run([sys.executable, "-I", "-c", _VERIFY, str(Path(directory).resolve()),
                                   str(sample_path), str(expected_path),
                                   json.dumps([n for n in sizes if n <= len(sample)]), json.dumps(files)],
                                  capture_output=True, text=True, cwd=tmp, timeout=timeout_s)
        except subprocess.TimeoutExpired:  # run() has killed it
            raise VerificationTimeout(
                f"verifying {', '.join(files.values())} from {directory} in a fresh process took longer than "
                f"PIPELINE_EXPORT_VERIFY_TIMEOUT_S={timeout_s:g} s (a hung load, or a machine far slower than this "
                f"setting allows): the verifier was killed") from None
    if done.returncode != 0:
        raise RuntimeError(f"loading {', '.join(files.values())} from {directory} in a fresh process failed:\n"
                           f"{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
