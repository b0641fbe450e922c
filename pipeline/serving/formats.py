"""The served model's formats, without torch: their files, their parity checks, the choice of the
one to serve, and loading one as a function from model input rows to logits.

- ``torchscript`` (``model.pt``) and ``exported_program`` (``model.pt2``) run in torch; loading
  either imports torch.
- ``onnx`` (``model.onnx``) runs in ONNX Runtime, which a server can use without torch installed;
  the file is a standard ONNX graph (opset 17) any ONNX runtime takes. Its first layer is split
  by input: ``user`` [u, 30] and ``restaurants`` [n, 10] (u = n, or 1 for one user), so a request
  (one user, n restaurants) multiplies the user's part once instead of once a row.

All three hold the same folded network (:class:`pipeline.model.network.FoldedClickMLP`). Loaded,
each is a :class:`LoadedModel`: [n, 40] float32 rows to n float32 logits, and one user [30] with
n restaurants [n, 10] to n logits.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data.model_input import USER_WIDTH, check_widths, one_user

MODEL_FILE = "model.pt"
PROGRAM_FILE = "model.pt2"
ONNX_FILE = "model.onnx"
FORMAT_FILES = {"torchscript": MODEL_FILE, "exported_program": PROGRAM_FILE, "onnx": ONNX_FILE}
PARITY_CHECKS = {fmt: f"{fmt}_matches_eager" for fmt in FORMAT_FILES}
PARITY_TOLERANCE = 1e-5  # of parity_difference
LATENCY_ROWS = (20, 70, 1000)
ONNX_OPSET = 17
# What an export version's files are, recorded with it; a role's export of an older revision is redone
# even for the same checkpoint. 2: ONNX's first layer split by input, the one-user probe logits.
EXPORT_REVISION = 2
JIT_DEPRECATION = r"`torch\.jit\.\w+` is deprecated"

Logits = Callable[[np.ndarray], np.ndarray]
OneUserLogits = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class LoadedModel:
    logits: Logits                  # [n, 40] float32 → [n] float32
    one_user_logits: OneUserLogits  # user [30] and restaurants [n, 10] float32 → [n] float32


@contextlib.contextmanager
def torchscript_deprecation_silenced() -> Iterator[None]:
    """TorchScript is deprecated in torch 2.13 and warns on script/save/load; it still works, so
    the warning is silenced by its message where those calls are made, and nowhere else."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=JIT_DEPRECATION, category=DeprecationWarning)
        yield


def parity_difference(got: np.ndarray, expected: np.ndarray) -> float:
    """How far logits ``got`` are from ``expected``: the largest difference, each relative to the
    larger of 1 and the expected logit's size. float32 rounding grows with a logit's size: folding
    the first two layers moves a logit of ~11 by ~5e-6, a logit of 0.5 by ~2e-7."""
    if got.size == 0:
        return 0.0
    return float(np.max(np.abs(got - expected) / np.maximum(1.0, np.abs(expected))))


def fastest(formats: dict[str, dict]) -> str:
    """The format with the lowest geometric mean of its p50 over the timed request sizes: each size
    counts alike (a sum would be the 1,000-row time alone), and p50 is what 300 calls measure
    steadily (their p99 is the 3rd-slowest call, too noisy to choose by)."""
    return min(formats, key=lambda f: math.prod(t["p50_ms"] for t in formats[f]["latency"].values()))


def format_of(path: Path) -> str:
    """The format a file's suffix names (``.onnx``, ``.pt2``; anything else is TorchScript)."""
    return {".onnx": "onnx", ".pt2": "exported_program"}.get(path.suffix, "torchscript")


def load_model(path: Path, fmt: str, threads: int = 1) -> LoadedModel:
    """The model in ``path``, computing on ``threads`` threads (ONNX Runtime's session option; for
    the torch formats torch's setting, which is process-wide and which this sets). Only the torch
    formats import torch."""
    if fmt == "onnx":
        return _onnx_model(path, threads)
    if fmt in ("torchscript", "exported_program"):
        logits = _torch_logits(path, fmt, threads)
        return LoadedModel(logits, lambda user, restaurants: logits(one_user(user, restaurants)))
    raise ValueError(f"unknown model format {fmt!r}; known: {sorted(FORMAT_FILES)}")


def _onnx_model(path: Path, threads: int) -> LoadedModel:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [one.name for one in session.get_inputs()]
    if names == ["x"]:  # a graph of [n, 40] rows, exported before the first layer was split by input
        def rows(x: np.ndarray) -> np.ndarray:
            return session.run(None, {"x": x})[0]

        return LoadedModel(rows, lambda user, restaurants: rows(one_user(user, restaurants)))

    def split(x: np.ndarray) -> np.ndarray:
        return session.run(None, {"user": np.ascontiguousarray(x[:, :USER_WIDTH]),
                                  "restaurants": np.ascontiguousarray(x[:, USER_WIDTH:])})[0]

    def for_user(user: np.ndarray, restaurants: np.ndarray) -> np.ndarray:
        check_widths(len(user), restaurants.shape[1])
        return session.run(None, {"user": np.ascontiguousarray(user, np.float32).reshape(1, -1),
                                  "restaurants": np.ascontiguousarray(restaurants, np.float32)})[0]

    return LoadedModel(split, for_user)


def _torch_logits(path: Path, fmt: str, threads: int) -> Logits:
    import torch

    torch.set_num_threads(threads)
    if fmt == "torchscript":
        with torchscript_deprecation_silenced():
            module = torch.jit.load(str(path)).eval()
    else:
        module = torch.export.load(str(path)).module()

    def logits(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()

    return logits
