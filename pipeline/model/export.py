"""TorchScript export of the click model, verified in a fresh process.

TorchScript is deprecated in torch 2.13 (``torch.jit.script``/``save``/``load`` warn with a
DeprecationWarning). It is still the reference's artifact and still works, so the warning is
silenced exactly where those calls are made, by its message, and nowhere else.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from pipeline.model.network import ClickMLP
from pipeline.publish import AuditResult, Published, write_audit_publish

JIT_DEPRECATION = r"`torch\.jit\.\w+` is deprecated"


@contextlib.contextmanager
def torchscript_deprecation_silenced() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=JIT_DEPRECATION, category=DeprecationWarning)
        yield


MODEL_FILE = "model.pt"
PARITY_CHECK = "torchscript_matches_eager"
PARITY_TOLERANCE = 1e-5
PROBE_ROWS = 16


def export_torchscript(model: ClickMLP, path: Path) -> int:
    """Script the reference module and write it to ``path`` (a file in a candidate directory);
    return its size."""
    with torchscript_deprecation_silenced():
        scripted = torch.jit.script(model.eval())
        torch.jit.save(scripted, str(path))
    return Path(path).stat().st_size


def parity_audit(verified: dict) -> AuditResult:
    passed = (verified["shape_ok"] and not verified["imported_project"]
              and verified["max_abs_diff"] <= PARITY_TOLERANCE)
    why = "" if passed else (f"max abs diff {verified['max_abs_diff']} > {PARITY_TOLERANCE}, shape ok "
                             f"{verified['shape_ok']}, imported the project {verified['imported_project']}")
    return AuditResult(PARITY_CHECK, bool(passed), {"max_abs_diff": verified["max_abs_diff"],
                                                    "rows": int(verified.get("rows", 0))}, why)


def _served_record(record: dict, module, sample: torch.Tensor) -> dict:
    """``record`` plus what a server checks the export against: the input width, and a probe
    batch with the logits ``module`` gives for it."""
    probe = sample[:PROBE_ROWS].contiguous()
    with torch.inference_mode():
        probe_logits = module.eval()(probe)
    return {**record, "format": "torchscript", "input_width": int(sample.shape[1]),
            "probe": {"x": probe.tolist(), "logits": probe_logits.tolist()}}


def publish_torchscript(model: ClickMLP, path: Path, sample: torch.Tensor, record: dict) -> Published:
    """Export ``model`` as a candidate, load it in a fresh process and compare it with the eager
    model on ``sample`` [n, 40]; publish it only if it matches. The version's record keeps
    ``record`` (the checkpoint and feature versions it pairs with) and a probe batch with the
    logits the export must give, so a server can check what it loads."""
    def write(staging: Path) -> dict:
        export_torchscript(model, staging / MODEL_FILE)
        return verify_torchscript(staging / MODEL_FILE, model, sample)

    def audit(staging: Path, verified: dict) -> list[AuditResult]:
        return [parity_audit({**verified, "rows": len(sample)})]

    return write_audit_publish(path, write, audit, record=_served_record(record, model, sample))


def publish_torchscript_file(model_file: Path, path: Path, sample: torch.Tensor, record: dict) -> Published:
    """Publish an existing TorchScript file (a model trained elsewhere, e.g. for a benchmark) as
    the export. There is no eager model to compare with, so the probe logits recorded are the
    file's own: a server can still check that what it loads is this model and takes this width."""
    with torchscript_deprecation_silenced():
        module = torch.jit.load(str(model_file))
    return write_audit_publish(path, lambda staging: shutil.copy(model_file, staging / MODEL_FILE),
                               lambda staging, _: [], record=_served_record(record, module, sample))


# Runs with `python -I` (no PYTHONPATH, no user site, no cwd on sys.path) and imports only torch:
# it proves the artifact loads where the project is not installed.
_VERIFY = r"""
import json, sys, time, warnings
import torch
warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning)
torch.set_num_threads(1)
model_path, sample_path, expected_path, candidates = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
model = torch.jit.load(model_path)
x, expected = torch.load(sample_path), torch.load(expected_path)
with torch.inference_mode():
    got = model(x)
    request = x[:candidates].contiguous()
    for _ in range(20):
        model(request)
    times = []
    for _ in range(200):
        t = time.perf_counter(); model(request); times.append(time.perf_counter() - t)
times.sort()
print(json.dumps({
    "shape_ok": list(got.shape) == [x.shape[0]],
    "max_abs_diff": float((got - expected).abs().max()),
    "latency_p50_ms": 1000 * times[len(times) // 2],
    "latency_p99_ms": 1000 * times[int(len(times) * 0.99)],
    "latency_candidates": request.shape[0],
    "imported_project": any(m == "pipeline" or m.startswith("pipeline.") for m in sys.modules),
}))
"""


def verify_torchscript(path: Path, model: ClickMLP, sample: torch.Tensor, candidates: int = 1000) -> dict:
    """Load ``path`` in a fresh interpreter, compare its logits with the eager model's on
    ``sample`` [n, 40], and time single-request scoring of ``candidates`` rows."""
    with torch.inference_mode():
        expected = model.eval()(sample)
    with tempfile.TemporaryDirectory(prefix="verify-") as tmp:
        sample_path, expected_path = Path(tmp) / "x.pt", Path(tmp) / "y.pt"
        torch.save(sample.contiguous(), sample_path)
        torch.save(expected, expected_path)
        done = subprocess.run([sys.executable, "-I", "-c", _VERIFY, str(path), str(sample_path),
                               str(expected_path), str(candidates)], capture_output=True, text=True, cwd=tmp)
    if done.returncode != 0:
        raise RuntimeError(f"loading {path} in a fresh process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
