"""An audit's verdict on a candidate (:class:`AuditResult`) and what a failed one raises (:class:`Rejected`).

Every writer of a published artifact (:mod:`pipeline.publish`, the online stores) runs its audits on the
candidate as written and publishes it only if every :class:`AuditResult` passed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class AuditResult:
    """One check of a candidate: its name, verdict, numbers for the record, and why it failed."""

    name: str
    passed: bool
    metadata: dict[str, Any] = field(default_factory=dict)
    description: str = ""


class Rejected(Exception):
    """A candidate failed an audit; nothing was published. ``artifact``: the published path, or
    the online store's name (a URL is kept as given)."""

    def __init__(self, artifact: str | os.PathLike[str], results: Sequence[AuditResult]):
        self.artifact, self.results = os.fspath(artifact), list(results)
        failed = "; ".join(f"{r.name}: {r.description or 'failed'}" for r in self.results if not r.passed)
        super().__init__(f"rejected candidate for {self.artifact} (the previous version stays live): {failed}")

    @property
    def failed(self) -> list[AuditResult]:
        return [r for r in self.results if not r.passed]
