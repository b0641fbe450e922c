"""Click probabilities from the exported TorchScript model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.atomic import file_version
from pipeline.model.export import torchscript_deprecation_silenced


class TorchScriptScorer:
    """Loads the exported model once; ``probabilities`` scores [n, 40] float32 rows."""

    def __init__(self, path: str | Path, version: str = ""):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"exported model not found: {self.path} (materialize torchscript_model first)")
        with torchscript_deprecation_silenced():
            self.module = torch.jit.load(str(self.path)).eval()
        self.version = version or file_version(self.path)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.empty(0)
        with torch.inference_mode():
            return torch.sigmoid(self.module(torch.from_numpy(x))).numpy().astype(np.float64)
