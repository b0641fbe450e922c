"""Click probabilities from the exported model, in whichever format the export names to serve, and
the checks a server runs on a model before it serves it. Nothing here imports torch: serving ONNX
needs only ONNX Runtime (:mod:`pipeline.serving.formats`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.atomic import file_version
from pipeline.data.model_input import RESTAURANT_WIDTH
from pipeline.integrity import verify_file
from pipeline.publish import Artifact
from pipeline.serving.formats import MODEL_FILE, PARITY_TOLERANCE, format_of, load_model, parity_difference


class ModelScorer:
    """Loads an exported model once; ``probabilities`` scores [n, 40] float32 rows, and
    ``probabilities_for_user`` one user against n restaurants (a request), on ``threads`` threads.
    The format is ``fmt``, or told by the file's suffix (:func:`format_of`)."""

    def __init__(self, path: str | Path, version: str = "", fmt: str | None = None, threads: int = 1):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"exported model not found: {self.path} (materialize model_exports first)")
        self.format = fmt or format_of(self.path)
        model = load_model(self.path, self.format, threads)
        self.logits, self.one_user_logits = model.logits, model.one_user_logits
        self.version = version or file_version(self.path)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.empty(0)
        return sigmoid(self.logits(x)).astype(np.float64)

    def probabilities_for_user(self, user: np.ndarray, restaurants: np.ndarray) -> np.ndarray:
        """Click probabilities of one user's features [30] against restaurants' [n, 10]."""
        if len(restaurants) == 0:
            return np.empty(0)
        return sigmoid(self.one_user_logits(user, restaurants)).astype(np.float64)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function in ``z``'s precision, without overflow for large ``|z|``."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def served_scorer(directory: Path, record: dict, version: str = "", threads: int = 1,
                  fmt: str = "recorded") -> ModelScorer:
    """Format ``fmt`` of an export version, or (``recorded``) the one its record says to serve (the
    fastest measured at publish time; TorchScript for versions from before there was a choice), its
    file verified first. ValueError when the version has no such format."""
    formats = record.get("formats", {})
    if fmt == "recorded":
        fmt = record.get("serve", "torchscript")
    elif fmt not in formats:
        raise ValueError(f"this export version holds {', '.join(sorted(formats)) or 'torchscript only'}, "
                         f"not the {fmt} format this server is set to serve (PIPELINE_API_MODEL_FORMAT)")
    file = formats.get(fmt, {}).get("file", MODEL_FILE)
    return ModelScorer(verify_file(directory, file, record), version=version, fmt=fmt, threads=threads)


def live_scorer(export: Path, threads: int = 1) -> ModelScorer:
    """The served format of the live export version at ``export`` (an artifact path)."""
    artifact = Artifact(export)
    version = artifact.live_version()
    if version is None:
        raise FileNotFoundError(f"no export published at {export} (materialize model_exports first)")
    return served_scorer(artifact.version_path(version), artifact.record(version), version, threads)


def check_scorer(scorer: ModelScorer, record: dict, input_width: int,
                 restaurant_width: int = RESTAURANT_WIDTH) -> dict:
    """Refuse (``ValueError`` with the reason) a model that does not take ``input_width`` inputs,
    gives non-finite or misshaped outputs, or does not reproduce the probe logits the pipeline
    recorded when it published it, as rows and as one user against many restaurants (where the
    record has those). Returns what was checked."""
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
    difference = parity_difference(got, expected)
    if difference > PARITY_TOLERANCE:
        raise ValueError(f"probe logits differ from the recorded ones by {difference:.3g} of max(1, |logit|) "
                         f"(> {PARITY_TOLERANCE})")
    checked = {"probe_rows": len(x), "max_abs_diff": float(np.abs(got - expected).max()),
               "parity_difference": difference}
    if "one_user_logits" in probe:  # the probe's first user against every probe restaurant, as requests run
        one = scorer.one_user_logits(x[0, :-restaurant_width], np.ascontiguousarray(x[:, -restaurant_width:]))
        difference = parity_difference(np.asarray(one), np.asarray(probe["one_user_logits"], np.float64))
        if difference > PARITY_TOLERANCE:
            raise ValueError(f"one user's probe logits differ from the recorded ones by {difference:.3g} of "
                             f"max(1, |logit|) (> {PARITY_TOLERANCE})")
        checked["one_user_parity_difference"] = difference
    return checked
