"""Every setting of the pipeline, defined once: its environment variable, type, default and description.

:class:`Settings` is a tree of frozen dataclasses, one group per concern. The entry points parse it
once with :func:`load_settings` (the Dagster definitions and resources, the API server, the command
line, the Celery worker) and hand the values they need down as arguments; nothing below them reads
the environment. A value that does not parse fails at load with the variable's name
(``PIPELINE_API_DEADLINE_MS: expected a number of milliseconds (above 0), got 'abc'``).

Plain dataclasses rather than pydantic-settings: that package is not installed, and what it would
add (parsing, nesting by prefix) is a few lines here, while a dataclass field's metadata carries
the variable name and the description the configuration table in docs/OPERATIONS.md is generated
from (``python -m pipeline.settings --write-docs``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from pipeline.settings.bigquery import BigQuerySettings
from pipeline.settings.fields import SettingsError, Spec, from_environ, specs
from pipeline.settings.groups import (
    ApiSettings,
    CelerySettings,
    DagsterSettings,
    FeedbackSettings,
    NativeSettings,
    OnlineStoreSettings,
    PathSettings,
    PublishingSettings,
    ReleaseSettings,
    SourceSettings,
)

__all__ = ["ApiSettings", "BigQuerySettings", "CelerySettings", "DagsterSettings", "FeedbackSettings", "NativeSettings",
           "OnlineStoreSettings", "PathSettings", "PublishingSettings", "ReleaseSettings",
           "Settings", "SettingsError", "SourceSettings",
           "all_specs", "load_settings"]


@dataclass(frozen=True)
class Settings:
    """The whole configuration, by concern."""

    paths: PathSettings = field(default_factory=PathSettings)
    source: SourceSettings = field(default_factory=SourceSettings)
    bigquery: BigQuerySettings = field(default_factory=BigQuerySettings)
    dagster: DagsterSettings = field(default_factory=DagsterSettings)
    celery: CelerySettings = field(default_factory=CelerySettings)
    native: NativeSettings = field(default_factory=NativeSettings)
    publishing: PublishingSettings = field(default_factory=PublishingSettings)
    store: OnlineStoreSettings = field(default_factory=OnlineStoreSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    feedback: FeedbackSettings = field(default_factory=FeedbackSettings)
    release: ReleaseSettings = field(default_factory=ReleaseSettings)


def groups() -> dict[str, type]:
    """The groups of :class:`Settings` by field name, in the order the documentation lists them."""
    return {f.name: f.type if isinstance(f.type, type) else globals()[f.type] for f in dataclasses.fields(Settings)}


def load_settings(variables: Mapping[str, str] | None = None) -> Settings:
    """Every group parsed from ``variables`` (default: the process's environment)."""
    variables = os.environ if variables is None else variables
    return Settings(**{name: from_environ(group, variables) for name, group in groups().items()})


def all_specs() -> Iterator[tuple[str, Spec]]:
    """(group name, setting) for every setting, in documentation order."""
    for name, group in groups().items():
        for spec in specs(group).values():
            yield name, spec
