"""Click probabilities from the exported model (TorchScript or torch.export ExportedProgram), and
the checks a server runs on a model before it serves it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.atomic import file_version
from pipeline.integrity import verify_file
from pipeline.model.export import FORMAT_FILES, MODEL_FILE, PARITY_TOLERANCE, torchscript_deprecation_silenced
from pipeline.publish import Artifact


def _load(path: Path, fmt: str):
    if fmt == "torchscript":
        with torchscript_deprecation_silenced():
            return torch.jit.load(str(path)).eval()
    if fmt == "exported_program":
        return torch.export.load(str(path)).module()
    raise ValueError(f"unknown model format {fmt!r}; known: {sorted(FORMAT_FILES)}")


class ModelScorer:
    """Loads an exported model once; ``probabilities`` scores [n, 40] float32 rows. The format is
    ``fmt``, or told by the file's suffix (``.pt2``: ExportedProgram, else TorchScript)."""

    def __init__(self, path: str | Path, version: str = "", fmt: str | None = None):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"exported model not found: {self.path} (materialize model_exports first)")
        self.format = fmt or ("exported_program" if self.path.suffix == ".pt2" else "torchscript")
        self.module = _load(self.path, self.format)
        self.version = version or file_version(self.path)

    def logits(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.module(torch.from_numpy(x)).numpy()

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.empty(0)
        with torch.inference_mode():
            return torch.sigmoid(self.module(torch.from_numpy(x))).numpy().astype(np.float64)


def served_scorer(directory: Path, record: dict, version: str = "") -> ModelScorer:
    """The format an export version's record says to serve (the faster one measured at publish
    time; TorchScript for versions from before there was a choice), its file verified first."""
    fmt = record.get("serve", "torchscript")
    file = record.get("formats", {}).get(fmt, {}).get("file", MODEL_FILE)
    return ModelScorer(verify_file(directory, file, record), version=version, fmt=fmt)


def live_scorer(export: Path) -> ModelScorer:
    """The served format of the live export version at ``export`` (an artifact path)."""
    artifact = Artifact(export)
    version = artifact.live_version()
    if version is None:
        raise FileNotFoundError(f"no export published at {export} (materialize model_exports first)")
    return served_scorer(artifact.version_path(version), artifact.record(version), version)


def check_scorer(scorer: ModelScorer, record: dict, input_width: int) -> dict:
    """Refuse (``ValueError`` with the reason) a model that does not take ``input_width`` inputs,
    gives non-finite or misshaped outputs, or does not reproduce the probe logits the pipeline
    recorded when it published it. Returns what was checked."""
    if record.get("input_width") != input_width:
        raise ValueError(f"recorded input width {record.get('input_width')}, the server sends {input_width}")
    probe = record.get("probe") or {}
    if not probe.get("x"):
        raise ValueError("no probe batch recorded with the model; it cannot be checked")
    x, expected = np.asarray(probe["x"], np.float32), np.asarray(probe["logits"], np.float64)
    try:
        got = scorer.logits(np.ascontiguousarray(x))
    except Exception as error:  # noqa: BLE001 - any failure to run means the model is unusable
        raise ValueError(f"does not take [{len(x)}, {input_width}] inputs: {str(error).splitlines()[0]}") from None
    if got.shape != expected.shape:
        raise ValueError(f"gives outputs of shape {list(got.shape)} for {len(x)} rows, expected {list(expected.shape)}")
    if not np.isfinite(got).all():
        raise ValueError(f"gives {int((~np.isfinite(got)).sum())} non-finite outputs on the probe batch")
    difference = float(np.abs(got - expected).max())
    if difference > PARITY_TOLERANCE:
        raise ValueError(f"probe logits differ from the recorded ones by {difference:.3g} (> {PARITY_TOLERANCE})")
    return {"probe_rows": len(x), "max_abs_diff": difference}
