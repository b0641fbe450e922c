"""An export's check in a fresh process: each format loaded where this project is not importable,
its logits compared with the eager model's (as rows, and as one user against many restaurants, the
way requests are scored), its single-request latency measured."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from pipeline.data.model_input import USER_WIDTH
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
user_width = int(sys.argv[6])
x, (expected, expected_one_user) = torch.load(sample_path), torch.load(expected_path)
user, restaurants = x[:1, :user_width].contiguous(), x[:, user_width:].contiguous()  # one user, many restaurants


# each loader: (rows → logits, (user, restaurants) → logits, a timed request of n restaurants as a server makes it)
def torch_model(module):
    # a torch format scores one user's request as rows: the user's features repeated beside each restaurant's
    one_user = lambda u, r: module(torch.cat([u.expand(len(r), -1), r], 1))
    return module, one_user, lambda n: (lambda request=restaurants[:n].contiguous(): one_user(user, request))


def onnx_model(path):
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    run = lambda u, r: torch.from_numpy(session.run(None, {"user": u.numpy(), "restaurants": r.numpy()})[0])

    def request(n):  # numpy in and out, as the server calls it
        feeds = {"user": user.numpy(), "restaurants": restaurants[:n].contiguous().numpy()}
        return lambda: session.run(None, feeds)

    return lambda rows: run(rows[:, :user_width].contiguous(), rows[:, user_width:].contiguous()), run, request


def relative(got, want):  # pipeline.serving.formats.parity_difference
    return float(((got - want).abs() / want.abs().clamp_min(1)).max())


loaders = {"torchscript": lambda p: torch_model(torch.jit.load(p).eval()),
           "exported_program": lambda p: torch_model(torch.export.load(p).module()), "onnx": onnx_model}
files = json.loads(sys.argv[5])
out = {"formats": {}}
for fmt, file in files.items():
    rows_model, one_user_model, timed_request = loaders[fmt](directory + "/" + file)
    with torch.inference_mode():
        got, got_one_user = rows_model(x), one_user_model(user, restaurants)
        latency = {}
        for n in sizes:  # one request: one user against n restaurants, as this format serves it
            call = timed_request(n)
            for _ in range(30):
                call()
            times = []
            for _ in range(300):
                t = time.perf_counter(); call(); times.append(time.perf_counter() - t)
            times.sort()
            latency[str(n)] = {"p50_ms": 1000 * times[len(times) // 2], "p99_ms": 1000 * times[int(len(times) * 0.99)]}
    out["formats"][fmt] = {"shape_ok": list(got.shape) == [x.shape[0]] == list(got_one_user.shape),
                           "max_abs_diff": float((got - expected).abs().max()),
                           "parity_difference": relative(got, expected),
                           "one_user_parity_difference": relative(got_one_user, expected_one_user),
                           "latency": latency}
out["imported_project"] = any(m == "pipeline" or m.startswith("pipeline.") for m in sys.modules)
print(json.dumps(out))
"""


def one_user_rows(x: torch.Tensor) -> torch.Tensor:
    """Model input rows of ``x``'s first user against every restaurant of ``x``: what a request
    scores, as rows."""
    rows = x.clone()
    rows[:, :USER_WIDTH] = x[0, :USER_WIDTH]
    return rows


class VerificationTimeout(TimeoutError):
    """The fresh process checking an export did not finish in time (it was killed)."""


def verify_export(directory: Path, model: torch.nn.Module, sample: torch.Tensor,
                  formats: tuple[str, ...] = tuple(FORMAT_FILES), sizes: tuple[int, ...] = LATENCY_ROWS,
                  timeout_s: float = PublishingSettings().export_verify_timeout_s) -> dict:
    """Load each format's file in ``directory`` in a fresh interpreter, compare its logits with the
    eager ``model``'s on ``sample`` [n, 40] and on the first user's features against every
    restaurant of ``sample``, and time single requests (one user, ``sizes`` restaurants; p50/p99).
    The interpreter is killed after ``timeout_s`` (``PIPELINE_EXPORT_VERIFY_TIMEOUT_S``):
    :class:`VerificationTimeout`."""
    with torch.inference_mode():
        expected = (model.eval()(sample), model(one_user_rows(sample)))
    with tempfile.TemporaryDirectory(prefix="verify-") as tmp:
        sample_path, expected_path = Path(tmp) / "x.pt", Path(tmp) / "y.pt"
        torch.save(sample.contiguous(), sample_path)
        torch.save(expected, expected_path)
        files = {f: FORMAT_FILES[f] for f in formats}
        try:
            done = subprocess.run([sys.executable, "-I", "-c", _VERIFY, str(Path(directory).resolve()),
                                   str(sample_path), str(expected_path),
                                   json.dumps([n for n in sizes if n <= len(sample)]), json.dumps(files),
                                   str(USER_WIDTH)],
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
