"""Drift: how far the inputs, and the challenger's scores, have moved from what a model was made on.

Population stability index (PSI) of a sample against a reference, over ten bins cut at the
reference's deciles (a value beyond the reference's range falls in an end bin; an empty bin counts
as 0.0001 of its side)::

    PSI = Σ (actual − expected) · ln(actual / expected)

- **Features**: every user and restaurant feature of the newest snapshot against the snapshot the
  model under judgement was trained on (the challenger's when one is out, else the champion's).
- **Scores**: the challenger's click probabilities against the champion's on the same inputs (a
  seeded sample of user × restaurant pairs of the newest snapshots).

A PSI above ``warn`` (default 0.1: a moderate shift) is a warning; above ``block`` (0.25: a major
shift) the judge does not promote the challenger (:func:`pipeline.release.operations.judge_canary`)
until a model trained on the new inputs is out, or an operator promotes it by hand.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pipeline.audits import AuditResult
from pipeline.publish import Artifact, write_audit_publish

BINS = 10
FLOOR = 1e-4
WARN, BLOCK = 0.1, 0.25
REPORT_FILE = "drift.json"
FEATURES_CHECK, SCORES_CHECK = "features_below_drift_warning", "scores_below_drift_warning"


def bin_edges(reference: np.ndarray, bins: int = BINS) -> np.ndarray:
    """The inner edges of ``bins`` bins at the reference's quantiles (repeated edges merged)."""
    return np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))


def shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return np.maximum(counts / max(len(values), 1), FLOOR)


def psi(reference: np.ndarray, actual: np.ndarray, bins: int = BINS) -> float:
    """PSI of ``actual`` against ``reference`` (see the module docstring); 0 for a constant reference
    that ``actual`` matches."""
    reference, actual = np.asarray(reference, np.float64), np.asarray(actual, np.float64)
    edges = bin_edges(reference, bins)
    expected, observed = shares(reference, edges), shares(actual, edges)
    return float(((observed - expected) * np.log(observed / expected)).sum())


def level(value: float, warn: float = WARN, block: float = BLOCK) -> str:
    return "block" if value > block else "warn" if value > warn else "ok"


@dataclass
class DriftReport:
    """What the drift asset publishes, and the judge reads."""

    model: str                              # the checkpoint version the features are compared for
    reference: dict[str, str]               # feature snapshot versions it was trained on
    current: dict[str, str]                 # the newest snapshot versions
    features: dict[str, float]              # "users/f00" → PSI
    score: float | None = None              # challenger against champion, None without a challenger
    champion: str = ""
    challenger: str = ""
    warn: float = WARN
    block: float = BLOCK
    score_warn: float = WARN
    score_block: float = 0.5
    histograms: dict[str, dict] = field(default_factory=dict)  # the largest shifts: reference and current shares

    def largest(self, n: int = 8) -> list[tuple[str, float]]:
        return sorted(self.features.items(), key=lambda kv: kv[1], reverse=True)[:n]

    def blocking(self) -> list[str]:
        """Why a promotion must wait ([] when nothing drifted beyond the block thresholds)."""
        why = [f"{name} PSI {value:.3f} > {self.block}" for name, value in self.largest(len(self.features))
               if value > self.block]
        if self.score is not None and self.score > self.score_block:
            why.append(f"challenger's scores PSI {self.score:.3f} > {self.score_block} against the champion's")
        return why

    def audits(self) -> list[AuditResult]:
        top = self.largest(3)
        over = [f"{n} {v:.3f}" for n, v in self.largest(len(self.features)) if v > self.warn]
        results = [AuditResult(FEATURES_CHECK, not over, {"max_feature_psi": top[0][1] if top else 0.0,
                                                           "features_over_warning": len(over), "warning": self.warn,
                                                           "block": self.block},
                               f"PSI above {self.warn}: {', '.join(over)}" if over else "")]
        if self.score is not None:
            results.append(AuditResult(SCORES_CHECK, self.score <= self.score_warn,
                                       {"score_psi": self.score, "warning": self.score_warn,
                                        "block": self.score_block},
                                       "" if self.score <= self.score_warn else
                                       f"the challenger's scores moved from the champion's: PSI {self.score:.3f}"))
        return results


def histogram(reference: np.ndarray, current: np.ndarray) -> dict:
    edges = bin_edges(np.asarray(reference, np.float64))
    return {"edges": edges.tolist(), "reference": shares(reference, edges).tolist(),
            "current": shares(current, edges).tolist()}


def publish(report: DriftReport, path: Path) -> None:
    def write(staging: Path) -> None:
        (staging / REPORT_FILE).write_text(json.dumps(asdict(report)))

    def audit(staging: Path, _) -> list[AuditResult]:
        DriftReport(**json.loads((staging / REPORT_FILE).read_text()))
        return []

    write_audit_publish(path, write, audit, record={"model": report.model, "challenger": report.challenger})


def latest(path: Path) -> DriftReport | None:
    artifact = Artifact(path)
    if artifact.live_version() is None:
        return None
    return DriftReport(**json.loads((artifact.live() / REPORT_FILE).read_text()))
