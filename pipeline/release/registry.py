"""The model registry: every decision about a model version's role, and the roles they add up to.

Roles of a checkpoint version:

- **champion**: serves every user not in a canary; one at a time. Promoting another makes this one
  a *former champion* (kept, so a rollback has somewhere to go).
- **challenger**: passed the release comparison against the champion; shadow-scored and, in a
  canary, served to a share of users until the judge (or an operator) promotes or retires it. One at
  a time: a newer challenger retires the older one ("superseded").
- **retired**: taken out of service by a rollback, the judge or an operator. Its lineage (the
  parent it was trained from and exactly what it was trained on) is remembered: an identical
  retrain is rejected before it is trained (:meth:`Roles.retired_lineage`).
- **rejected**: a candidate that failed the absolute bar or the comparison; recorded with the
  metrics and why, its weights not kept.

The registry is a published artifact (:mod:`pipeline.publish`) holding the whole decision history
in ``registry.json``; :meth:`Registry.record` appends decisions under its lock (read, fold, audit,
publish), so two writers never lose each other's decisions and a crash leaves the previous history.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.audits import AuditResult
from pipeline.locks import DEFAULT_LOCK_TIMEOUT_S
from pipeline.publish import Artifact

REGISTRY_FILE = "registry.json"
ROLES = ("champion", "challenger", "retired", "rejected")
FORMER = "former champion"
KEPT_FORMER_CHAMPIONS = 2  # checkpoints and exports of the last two champions stay for a rollback
VALID_CHECK = "roles_are_consistent"


def operator(configured: str = "") -> str:
    """Who is deciding, for the record: ``configured`` (``PIPELINE_OPERATOR``), else the login name."""
    try:
        return configured or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Decision:
    """One change of a version's role: who decided it, when and why, and the figures behind it."""

    version: str
    role: str
    by: str
    reason: str
    at: str = field(default_factory=now)
    lineage: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {self.role!r}")
        if not self.reason.strip():
            raise ValueError("a decision needs a reason")

    def as_json(self) -> dict:
        return dataclasses.asdict(self)


class InvalidDecision(ValueError):
    """Decisions that would leave the roles inconsistent (e.g. two challengers); nothing was recorded."""


@dataclass
class Roles:
    """What the decisions add up to (folded oldest first)."""

    champion: str | None = None
    challenger: str | None = None
    former_champions: list[str] = field(default_factory=list)  # oldest first
    latest: dict[str, Decision] = field(default_factory=dict)   # version → its latest decision
    lineages: dict[str, str] = field(default_factory=dict)      # lineage → version (accepted or retired)
    history: list[Decision] = field(default_factory=list)

    @classmethod
    def fold(cls, decisions: Iterable[Decision]) -> Roles:
        roles = cls()
        for decision in decisions:
            roles._apply(decision)
        return roles

    def _apply(self, d: Decision) -> None:
        if d.role == "champion":
            if self.champion and self.champion != d.version:
                self.former_champions = [v for v in self.former_champions if v != self.champion] + [self.champion]
            self.champion = d.version
            if self.challenger == d.version:
                self.challenger = None
        elif d.role == "challenger":
            if self.challenger and self.challenger != d.version:
                raise InvalidDecision(f"{d.version} cannot become challenger while {self.challenger} is one: "
                                      f"retire {self.challenger} first")
            if self.champion == d.version:
                raise InvalidDecision(f"{d.version} is the champion")
            self.challenger = d.version
        elif d.role == "retired":
            if self.champion == d.version:
                self.champion = None
            if self.challenger == d.version:
                self.challenger = None
            self.former_champions = [v for v in self.former_champions if v != d.version]
        if d.lineage:
            self.lineages[d.lineage] = d.version
        self.latest[d.version] = d
        self.history.append(d)

    def role_of(self, version: str) -> str:
        """champion, challenger, former champion, retired, rejected, or "" (never decided)."""
        if version == self.champion:
            return "champion"
        if version == self.challenger:
            return "challenger"
        if version in self.former_champions:
            return FORMER
        decision = self.latest.get(version)
        return decision.role if decision else ""

    def retired_lineage(self, lineage: str) -> Decision | None:
        """The retirement of the version this lineage would recreate, if it was retired."""
        version = self.lineages.get(lineage)
        decision = self.latest.get(version) if version else None
        return decision if decision is not None and decision.role == "retired" else None

    def serving(self) -> list[str]:
        """The champion, then the challenger (those that exist)."""
        return [v for v in (self.champion, self.challenger) if v]

    def kept(self) -> set[str]:
        """Versions whose checkpoint and export must be kept: the champion, the challenger and the
        last :data:`KEPT_FORMER_CHAMPIONS` former champions."""
        return {*self.serving(), *self.former_champions[-KEPT_FORMER_CHAMPIONS:]}

    def audit(self) -> AuditResult:
        problems = []
        ever = any(d.role == "champion" for d in self.history)
        if self.champion is None and (ever or self.challenger):
            problems.append("no champion: a rollback or retirement must name the version that serves instead")
        return AuditResult(VALID_CHECK, not problems, {"decisions": len(self.history)}, "; ".join(problems))


class Registry:
    """The decision history of one model, published at ``path``."""

    def __init__(self, path: str | os.PathLike):
        self.artifact = Artifact(path, keep=2)

    @property
    def path(self) -> Path:
        return self.artifact.path

    def decisions(self) -> list[Decision]:
        if self.artifact.live_version() is None:
            return []
        payload = json.loads((self.artifact.live() / REGISTRY_FILE).read_text())
        return [Decision(**d) for d in payload["decisions"]]

    def roles(self) -> Roles:
        return Roles.fold(self.decisions())

    def version(self) -> str | None:
        """The registry's published version (changes with every decision recorded)."""
        return self.artifact.live_version()

    def record(self, *decisions: Decision, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> Roles:
        """Append ``decisions`` (in order) and publish; the roles after them. InvalidDecision
        (nothing recorded) when they would leave the roles inconsistent."""
        with self.artifact.lock(lock_timeout_s):
            history = [*self.decisions(), *decisions]
            roles = Roles.fold(history)  # InvalidDecision before anything is written

            def write(staging: Path) -> None:
                (staging / REGISTRY_FILE).write_text(json.dumps({"decisions": [d.as_json() for d in history]},
                                                                indent=1, default=str))

            def audit(staging: Path, _) -> list[AuditResult]:
                written = json.loads((staging / REGISTRY_FILE).read_text())["decisions"]
                return [Roles.fold(Decision(**d) for d in written).audit()]

            self.artifact.write_audit_publish_locked(write, audit, record={
                "champion": roles.champion, "challenger": roles.challenger, "decisions": len(history)})
            return roles
