"""Write-audit-publish in Dagster terms: the pure core's audits are the assets' blocking checks.

An asset writes a candidate, the pure core audits it and publishes it only if every audit
passed. Here the audits become ``AssetCheckResult``s (so the UI shows them on the asset), and a
rejection becomes a failed step whose message names the artifact, the check and why; the
previous version stays live, and downstream assets do not run.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Sequence
from typing import TypeVar

import dagster as dg

from pipeline.audits import AuditResult, Rejected
from pipeline.publish import Published

T = TypeVar("T")


def _metadata_value(value):
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float | str):
        return value
    return dg.MetadataValue.json(value)


def check_results(audits: Iterable[AuditResult], asset: str | None = None, names: Sequence[str] | None = None,
                  severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR) -> list[dg.AssetCheckResult]:
    """One check result per audit (only those in ``names``, when given)."""
    return [dg.AssetCheckResult(
        check_name=a.name, passed=a.passed, asset_key=dg.AssetKey(asset) if asset else None, severity=severity,
        description=a.description or None,
        metadata={k: _metadata_value(v) for k, v in a.metadata.items()})
        for a in audits if names is None or a.name in names]


def check_specs(asset: str, names_and_descriptions: dict[str, str]) -> list[dg.AssetCheckSpec]:
    """Blocking check specs for the audits an asset runs on its candidates."""
    return [dg.AssetCheckSpec(name, asset=asset, blocking=True, description=description)
            for name, description in names_and_descriptions.items()]


def published_or_failed(publish: Callable[[], T], assets: dict[str, str] | None = None
                        ) -> Generator[dg.AssetCheckResult, None, T]:
    """``publish()``'s result; if the candidate is rejected, yield its check results (each on the
    asset ``assets`` maps its name to, else the step's own asset) and fail the step saying why.
    Use as ``published = yield from published_or_failed(...)``."""
    try:
        return publish()
    except Rejected as rejected:
        for audit in rejected.results:
            yield from check_results([audit], (assets or {}).get(audit.name))
        raise rejection(rejected) from None


def rejection(rejected: Rejected) -> dg.Failure:
    """The step failure for a rejected candidate (not retried: the same input is rejected again)."""
    return dg.Failure(description=str(rejected), allow_retries=False, metadata={
        "artifact": dg.MetadataValue.path(rejected.artifact),
        "failed_checks": dg.MetadataValue.json(
            [{"check": a.name, "why": a.description, **a.metadata} for a in rejected.failed])})


def published_metadata(published: Published) -> dict:
    """What every publish reports: the version made live and the one it replaced."""
    return {"version": published.version, "previous_version": published.previous or "",
            "path": dg.MetadataValue.path(str(published.path))}
