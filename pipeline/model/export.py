"""The served model's export: TorchScript and a torch.export ExportedProgram, verified in a fresh process.

One export version holds both formats of the same model, written as a candidate and published
only if each, loaded in a fresh interpreter that imports nothing of this project, reproduces the
eager model's logits:

- ``model.pt``: TorchScript, the reference's artifact and what users ask for. TorchScript is
  deprecated in torch 2.13 (``torch.jit.script``/``save``/``load`` warn with a
  DeprecationWarning); it still works, so the warning is silenced exactly where those calls are
  made, by its message, and nowhere else.
- ``model.pt2``: an ExportedProgram (``torch.export``) with a dynamic batch dimension (1 to 2^20
  rows), TorchScript's successor.

The verifying process also times both at 20, 70 and 1,000 rows (a request's candidates within
``max_dist`` number ~19–70; 1,000 is every candidate); the version's record names the format with
the lowest p50 over the three (geometric mean) as the one to ``serve``, and the API loads that one.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from pipeline.audits import AuditResult
from pipeline.disk_space import torch_bytes, write_bytes
from pipeline.model.network import ClickMLP
from pipeline.publish import Published, write_audit_publish
from pipeline.settings import PublishingSettings

JIT_DEPRECATION = r"`torch\.jit\.\w+` is deprecated"


@contextlib.contextmanager
def torchscript_deprecation_silenced() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=JIT_DEPRECATION, category=DeprecationWarning)
        yield


MODEL_FILE = "model.pt"
PROGRAM_FILE = "model.pt2"
FORMAT_FILES = {"torchscript": MODEL_FILE, "exported_program": PROGRAM_FILE}
PARITY_CHECK = "torchscript_matches_eager"
PROGRAM_PARITY_CHECK = "exported_program_matches_eager"
PARITY_CHECKS = {"torchscript": PARITY_CHECK, "exported_program": PROGRAM_PARITY_CHECK}
PARITY_TOLERANCE = 1e-5
PROBE_ROWS = 16
LATENCY_ROWS = (20, 70, 1000)
MAX_BATCH = 1 << 20


def export_torchscript(model: ClickMLP, path: Path) -> int:
    """Script the reference module and write it to ``path`` (a file in a candidate directory);
    return its size."""
    with torchscript_deprecation_silenced():
        scripted = torch.jit.script(model.eval())
        return write_bytes(path, torch_bytes(lambda buffer: torch.jit.save(scripted, buffer)))


def export_program(model: ClickMLP, path: Path) -> int:
    """``torch.export`` the reference module with a dynamic batch dimension and save the
    ExportedProgram to ``path``; return its size."""
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    program = torch.export.export(model.eval(), (torch.zeros(2, model.fc1.in_features),),
                                  dynamic_shapes={"x": {0: batch}})
    return write_bytes(path, torch_bytes(lambda buffer: torch.export.save(program, buffer)))


def parity_audit(verified: dict, fmt: str, rows: int) -> AuditResult:
    """A format's check: loaded in a fresh process that did not import the project, it gives the
    eager model's logits (within the tolerance) in the right shape."""
    one = verified["formats"][fmt]
    passed = one["shape_ok"] and not verified["imported_project"] and one["max_abs_diff"] <= PARITY_TOLERANCE
    why = "" if passed else (f"{fmt}: max abs diff {one['max_abs_diff']} > {PARITY_TOLERANCE}, shape ok "
                             f"{one['shape_ok']}, imported the project {verified['imported_project']}")
    return AuditResult(PARITY_CHECKS[fmt], bool(passed), {"max_abs_diff": one["max_abs_diff"], "rows": rows}, why)


def fastest(formats: dict[str, dict]) -> str:
    """The format with the lowest geometric mean of its p50 over the timed request sizes: each size
    counts alike (a sum would be the 1,000-row time alone), and p50 is what 300 calls measure
    steadily (their p99 is the 3rd-slowest call, too noisy to choose by)."""
    return min(formats, key=lambda f: math.prod(t["p50_ms"] for t in formats[f]["latency"].values()))


def _served_record(record: dict, module, sample: torch.Tensor, formats: dict[str, dict] | None = None) -> dict:
    """``record`` plus what a server needs: the format to serve, and what it checks that against
    (the input width, and a probe batch with the logits ``module`` gives for it)."""
    probe = sample[:PROBE_ROWS].contiguous()
    with torch.inference_mode():
        probe_logits = module.eval()(probe)
    formats = formats or {"torchscript": {}}
    return {**record, "serve": fastest(formats) if len(formats) > 1 else next(iter(formats)),
            "formats": {f: {"file": FORMAT_FILES[f], **numbers} for f, numbers in formats.items()},
            "input_width": int(sample.shape[1]), "probe": {"x": probe.tolist(), "logits": probe_logits.tolist()}}


def publish_export(model: ClickMLP, path: Path, sample: torch.Tensor, record: dict,
                   verify_timeout_s: float = PublishingSettings().export_verify_timeout_s) -> Published:
    """Export ``model`` in both formats as a candidate, load each in a fresh process and compare
    it with the eager model on ``sample`` [n, 40]; publish only if both match. The version's
    record keeps ``record`` (the checkpoint and feature versions it pairs with), each format's
    measured latency, the format to serve, and a probe batch with the logits the export must
    give, so a server can check what it loads. A verification that outlasts ``verify_timeout_s``
    (``PIPELINE_EXPORT_VERIFY_TIMEOUT_S``) is killed: :class:`VerificationTimeout`, nothing
    published."""
    def write(staging: Path) -> dict:
        export_torchscript(model, staging / MODEL_FILE)
        export_program(model, staging / PROGRAM_FILE)
        try:
            return verify_export(staging, model, sample, timeout_s=verify_timeout_s)
        except VerificationTimeout as hung:
            raise VerificationTimeout(f"{hung}; nothing was published, the previous export stays live") from None

    def audit(staging: Path, verified: dict) -> list[AuditResult]:
        return [parity_audit(verified, fmt, len(sample)) for fmt in FORMAT_FILES]

    return write_audit_publish(path, write, audit, record=lambda verified: _served_record(
        record, model, sample, {f: {"latency": verified["formats"][f]["latency"]} for f in FORMAT_FILES}))


def publish_torchscript_file(model_file: Path, path: Path, sample: torch.Tensor, record: dict) -> Published:
    """Publish an existing TorchScript file (a model trained elsewhere, e.g. for a benchmark) as
    the export. There is no eager model to compare with, so the probe logits recorded are the
    file's own: a server can still check that what it loads is this model and takes this width."""
    with torchscript_deprecation_silenced():
        module = torch.jit.load(str(model_file))
    return write_audit_publish(path, lambda staging: shutil.copy(model_file, staging / MODEL_FILE),
                               lambda staging, _: [], record=_served_record(record, module, sample))


# Runs with `python -I` (no PYTHONPATH, no user site, no cwd on sys.path) and imports only torch:
# it proves the artifacts load where the project is not installed.
_VERIFY = r"""
import json, sys, time, warnings
import torch
warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning)
torch.set_num_threads(1)
directory, sample_path, expected_path, sizes = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
x, expected = torch.load(sample_path), torch.load(expected_path)
loaders = {"torchscript": lambda p: torch.jit.load(p).eval(),
           "exported_program": lambda p: torch.export.load(p).module()}
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
    out["formats"][fmt] = {"shape_ok": list(got.shape) == [x.shape[0]],
                           "max_abs_diff": float((got - expected).abs().max()), "latency": latency}
out["imported_project"] = any(m == "pipeline" or m.startswith("pipeline.") for m in sys.modules)
print(json.dumps(out))
"""


class VerificationTimeout(TimeoutError):
    """The fresh process checking an export did not finish in time (it was killed)."""


def verify_export(directory: Path, model: ClickMLP, sample: torch.Tensor,
                  formats: tuple[str, ...] = tuple(FORMAT_FILES), sizes: tuple[int, ...] = LATENCY_ROWS,
                  timeout_s: float = PublishingSettings().export_verify_timeout_s) -> dict:
    """Load each format's file in ``directory`` in a fresh interpreter, compare its logits with the
    eager model's on ``sample`` [n, 40], and time single requests of ``sizes`` rows (p50/p99). The
    interpreter is killed after ``timeout_s`` (``PIPELINE_EXPORT_VERIFY_TIMEOUT_S``):
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
