"""The release comparison: a candidate against the champion on the same evaluation.

A candidate becomes a challenger only if no metric is worse than the champion's by more than its
margin (:data:`MARGINS`, absolute). Ranking metrics over logged lists are compared only when both
evaluations counted at least :data:`MIN_LOGGED_REQUESTS` requests with a click: fewer make a noisy
figure that would reject good candidates by chance.

The logged lists were ranked and shown by the champion, and clicks fall with the rank shown
(position bias), so re-ranking them favours the model that ranked them: the ranking margins allow
for that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# metric: (higher is better, the largest loss allowed)
MARGINS: dict[str, tuple[bool, float]] = {
    "accuracy": (True, 0.005),
    "auc": (True, 0.005),
    "log_loss": (False, 0.01),
    "calibration_error": (False, 0.02),
    "ndcg_at_5": (True, 0.02),
    "ndcg_at_10": (True, 0.02),
    "user_auc": (True, 0.02),
}
LOGGED_METRICS = ("ndcg_at_5", "ndcg_at_10", "user_auc")
MIN_LOGGED_REQUESTS = 200


@dataclass(frozen=True)
class Comparison:
    """One metric of the candidate against the champion's."""

    metric: str
    candidate: float
    champion: float
    margin: float
    higher_is_better: bool
    compared: bool = True   # False: too few rows, or missing on a side
    note: str = ""

    @property
    def change(self) -> float:
        """How much better the candidate is (positive: better)."""
        difference = self.candidate - self.champion
        return difference if self.higher_is_better else -difference

    @property
    def worse(self) -> bool:
        return self.compared and self.change < -self.margin

    def describe(self) -> str:
        return (f"{self.metric} {self.candidate:.4f} against the champion's {self.champion:.4f} "
                f"({'higher' if self.higher_is_better else 'lower'} is better; margin {self.margin:g})")

    def as_json(self) -> dict:
        return {"metric": self.metric, "candidate": self.candidate, "champion": self.champion,
                "margin": self.margin, "change": self.change, "compared": self.compared,
                "worse": self.worse, "note": self.note}


def compare(candidate: dict, champion: dict, margins: dict[str, tuple[bool, float]] = MARGINS,
            min_logged_requests: int = MIN_LOGGED_REQUESTS) -> list[Comparison]:
    """Every metric of :data:`MARGINS` compared (see the module docstring)."""
    results = []
    for metric, (higher, margin) in margins.items():
        ours, theirs = candidate.get(metric, math.nan), champion.get(metric, math.nan)
        note = ""
        if not (math.isfinite(ours) and math.isfinite(theirs)):
            note = "not measured on both"
        elif metric in LOGGED_METRICS and min(candidate.get("logged_requests_with_clicks", 0),
                                              champion.get("logged_requests_with_clicks", 0)) < min_logged_requests:
            note = (f"{candidate.get('logged_requests_with_clicks', 0)} held-out logged requests with a click, "
                    f"fewer than {min_logged_requests}")
        results.append(Comparison(metric, ours, theirs, margin, higher, not note, note))
    return results


def worse(comparisons: list[Comparison]) -> list[Comparison]:
    return [c for c in comparisons if c.worse]
