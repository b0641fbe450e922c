"""The decisions a training run records, and keeping the checkpoint's pointer on the lineage's head.

The checkpoint artifact's live version is the head of the model's lineage, what the next
incremental run continues: the challenger when it was trained on top of the champion, else the
champion (:func:`pipeline.release.switch.lineage_head`). A published
candidate that passed the gate becomes the champion when there is none, else the challenger
(retiring the one it supersedes); a rejected one is recorded with why.
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.audits import Rejected
from pipeline.publish import Artifact
from pipeline.release.registry import Decision, Registry, Roles
from pipeline.release.switch import lineage_head

ADOPTED = "the model of record when the registry began: adopted as champion"


def reconcile(registry: Registry, checkpoint: Artifact, log: Callable[[str], None]) -> Roles:
    """Bring the checkpoint's live version and the roles into line (call with the checkpoint's lock
    held): a checkpoint from before the registry is adopted as champion; a live version that is not
    the lineage's head (a decision taken while a run held the lock, or a run killed between
    publishing and recording) gives way to it."""
    roles = registry.roles()
    live = checkpoint.live_version()
    if live is None:
        return roles
    if roles.champion is None and roles.challenger is None:
        log(f"checkpoint {live} adopted as champion (no role was recorded for it)")
        return registry.record(Decision(live, "champion", "pipeline", ADOPTED))
    head = lineage_head(checkpoint, roles)
    if head and live != head and head in checkpoint.versions():
        log(f"checkpoint {live} is not the lineage's head: continuing from {head}")
        checkpoint.point_to(head)
    return roles


def accepted(registry: Registry, version: str, lineage: str, metrics: dict, by: str) -> Roles:
    """Record a published candidate: champion when there is none, else challenger."""
    roles = registry.roles()
    if roles.champion is None:
        return registry.record(Decision(version, "champion", by, "the first model: it passed the absolute bar",
                                        lineage=lineage, metrics=metrics))
    decisions = []
    if roles.challenger:
        decisions.append(Decision(roles.challenger, "retired", by, f"superseded by {version}"))
    decisions.append(Decision(version, "challenger", by, f"not worse than champion {roles.champion} beyond the "
                              f"margins", lineage=lineage, metrics=metrics))
    return registry.record(*decisions)


def rejected(registry: Registry, version: str, lineage: str, rejection: Rejected, by: str) -> Roles:
    """Record a candidate that failed an audit: which, and the figures the audit reported."""
    metrics = {f"{a.name}/{k}": v for a in rejection.results for k, v in a.metadata.items()
               if isinstance(v, int | float | str)}
    why = "; ".join(f"{a.name}: {a.description or 'failed'}" for a in rejection.failed)
    return registry.record(Decision(version, "rejected", by, why, lineage=lineage, metrics=metrics))
