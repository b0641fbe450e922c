"""The shrink rule: a new version of a table may not lose more than a fraction of the live one.

One rule for every table the API reads users and restaurants from: the feature snapshots (rows and
ids, compared with the live snapshot) and the online store (rows, compared with the live store
version). A candidate with 0 rows is always refused, even when a shrink is allowed: nothing that
serves requests can work from an empty table. A larger fall is refused unless the run allows it
(``allow``: a deliberate shrink, such as removing users on request); an allowed shrink passes and
says so in its metadata.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.audits import AuditResult
from pipeline.settings import PublishingSettings

MAX_SHRINK_SETTING = "PIPELINE_MAX_SHRINK_FRACTION"


def dropped_ids(live_ids: np.ndarray, candidate_ids: np.ndarray) -> int:
    """How many of ``live_ids`` are not in ``candidate_ids`` (both unique, as snapshots store them).
    Identical id sets cost one comparison; otherwise ``np.isin``, which counts through a lookup
    table when the ids span a bounded range (dense ids) and merges sorted arrays when they do not."""
    live_ids, candidate_ids = np.asarray(live_ids, np.int64), np.asarray(candidate_ids, np.int64)
    if np.array_equal(live_ids, candidate_ids):
        return 0
    return len(live_ids) - int(np.count_nonzero(np.isin(live_ids, candidate_ids, assume_unique=True)))


@dataclass(frozen=True)
class ShrinkGuard:
    """Refuses a candidate with 0 rows always, and one that falls by more than ``max_fraction``
    of the live version's rows (or drops more than that fraction of its ids) unless ``allow``."""

    max_fraction: float = PublishingSettings().max_shrink_fraction
    allow: bool = False

    def __post_init__(self):
        if not 0 <= self.max_fraction <= 1:
            raise ValueError(f"{MAX_SHRINK_SETTING}: {self.max_fraction} is not a fraction between 0 and 1")

    def problems(self, what: str, candidate_rows: int, live_rows: int | None,
                 ids_dropped: int | None = None) -> list[str]:
        """Why ``what`` may not replace its live version (empty: it may). ``live_rows`` None:
        nothing is live yet; ``ids_dropped`` None: the ids were not compared."""
        if candidate_rows == 0:
            live = f" (the live version has {live_rows})" if live_rows is not None else ""
            return [f"{what}: the candidate has 0 rows{live}; an empty table is never published"]
        if live_rows is None or live_rows == 0 or self.allow:
            return []
        allowed = f"more than the {self.max_fraction:.2%} allowed by {MAX_SHRINK_SETTING}"
        found = []
        if live_rows - candidate_rows > self.max_fraction * live_rows:
            found.append(f"{what}: {candidate_rows} rows, the live version has {live_rows} "
                         f"(a fall of {(live_rows - candidate_rows) / live_rows:.2%}, {allowed})")
        if ids_dropped is not None and ids_dropped > self.max_fraction * live_rows:
            found.append(f"{what}: {ids_dropped} of the live version's {live_rows} ids are missing "
                         f"({ids_dropped / live_rows:.2%}, {allowed})")
        return found

    def audit(self, check: str, tables: list[tuple[str, int, int | None, int | None]]) -> AuditResult:
        """One audit over ``tables``: (what, candidate rows, live rows or None, ids dropped or None)
        each. Its metadata holds every count and the fraction allowed, and whether a shrink was
        allowed by the run; its description names the counts of every table that fails."""
        problems, shrunk = [], False
        metadata = {"max_shrink_fraction": self.max_fraction, "shrink_allowed": self.allow}
        for what, candidate_rows, live_rows, ids_dropped in tables:
            problems += self.problems(what, candidate_rows, live_rows, ids_dropped)
            shrunk |= live_rows is not None and 0 < candidate_rows and (candidate_rows < live_rows or bool(ids_dropped))
            prefix = f"{what}_" if len(tables) > 1 else ""
            metadata[f"{prefix}candidate_rows"] = candidate_rows
            metadata[f"{prefix}live_rows"] = live_rows if live_rows is not None else -1
            if ids_dropped is not None:
                metadata[f"{prefix}ids_dropped"] = ids_dropped
        description = "; ".join(problems)
        if problems and not self.allow and shrunk:
            description += " (a deliberate shrink: run with allow_shrink: true)"
        elif not problems and self.allow and shrunk:
            description = "a shrink was allowed by the run (allow_shrink)"
        return AuditResult(check, not problems, metadata, description)
