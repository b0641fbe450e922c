"""Binary classification metrics on logits, in numpy (no scikit-learn needed for four formulas)."""

from __future__ import annotations

import numpy as np

EPS = 1e-7


def probabilities(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


def accuracy(logits: np.ndarray, clicks: np.ndarray) -> float:
    """mean((sigmoid(logit) > 0.5) == click), the reference's definition."""
    return float(np.mean((np.asarray(logits) > 0) == (np.asarray(clicks) > 0.5))) if len(clicks) else float("nan")


def log_loss(logits: np.ndarray, clicks: np.ndarray) -> float:
    p = np.clip(probabilities(logits), EPS, 1 - EPS)
    y = np.asarray(clicks, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))) if len(y) else float("nan")


def roc_auc(logits: np.ndarray, clicks: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties get average ranks); NaN with one class."""
    y = np.asarray(clicks) > 0.5
    positives, n = int(y.sum()), len(y)
    if positives in (0, n):
        return float("nan")
    order = np.argsort(logits)  # ties get average ranks below, so stability is not needed
    ranked = np.asarray(logits)[order]
    ranks = np.empty(n, dtype=np.float64)
    # average rank within each run of equal scores
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    ends = np.r_[starts[1:], n]
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * (n - positives)))


def calibration(logits: np.ndarray, clicks: np.ndarray, bins: int = 10) -> list[dict]:
    """Per probability decile: rows, mean predicted probability, observed click rate."""
    p = probabilities(logits)
    y = np.asarray(clicks, dtype=np.float64)
    which = np.minimum((p * bins).astype(int), bins - 1)
    table = []
    for b in range(bins):
        mask = which == b
        count = int(mask.sum())
        table.append({"bin": f"{b / bins:.1f}-{(b + 1) / bins:.1f}", "rows": count,
                      "mean_predicted": float(p[mask].mean()) if count else float("nan"),
                      "observed_rate": float(y[mask].mean()) if count else float("nan")})
    return table


def summary(logits: np.ndarray, clicks: np.ndarray) -> dict[str, float]:
    return {"accuracy": accuracy(logits, clicks), "auc": roc_auc(logits, clicks),
            "log_loss": log_loss(logits, clicks), "rows": int(len(clicks))}
