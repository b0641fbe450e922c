"""What a BigQuery source needs of its settings before it reads: a project and a dataset, and
identifiers that can only name a table or a column (they are written into SQL)."""

from __future__ import annotations

import re

from pipeline.data.sources import SourceConfigError
from pipeline.settings.bigquery import CLICKS_READS, READ_APIS, BigQuerySettings

_PROJECT = re.compile(r"^(?:[a-z0-9.-]+:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$")  # optionally domain-scoped
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,1024}$")  # stricter than BigQuery: no spaces or unicode
_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,299}$")


def check(settings: BigQuerySettings) -> None:
    """Raise :class:`SourceConfigError` naming the first setting a source cannot read with."""
    s = settings
    if not s.project:
        raise SourceConfigError("the BigQuery source needs a project: set PIPELINE_BIGQUERY_PROJECT "
                                "(or the source resource's project)")
    if not s.dataset:
        raise SourceConfigError("the BigQuery source needs a dataset: set PIPELINE_BIGQUERY_DATASET "
                                "(or the source resource's dataset)")
    if not _PROJECT.match(s.project):
        raise SourceConfigError(f"PIPELINE_BIGQUERY_PROJECT={s.project!r} is not a BigQuery project id")
    for setting, value in (("dataset", s.dataset), ("clicks_table", s.clicks_table),
                           ("users_table", s.users_table), ("restaurants_table", s.restaurants_table),
                           ("test_table", s.test_table), ("requests_table", s.requests_table)):
        if not _NAME.match(value):
            raise SourceConfigError(f"BigQuery {setting}={value!r}: use letters, digits, '_' and '-' only")
    if not _COLUMN.match(s.day_column):
        raise SourceConfigError(f"BigQuery day_column={s.day_column!r} is not a column name")
    if s.read_api not in READ_APIS:
        raise SourceConfigError(f"BigQuery read_api={s.read_api!r}: one of {', '.join(READ_APIS)}")
    if s.clicks_read not in CLICKS_READS:
        raise SourceConfigError(f"BigQuery clicks_read={s.clicks_read!r}: one of {', '.join(CLICKS_READS)}")
    if s.maximum_bytes_billed < 0 or s.page_rows <= 0 or s.timeout_s <= 0:
        raise SourceConfigError("BigQuery maximum_bytes_billed must be >= 0 (0: no cap), page_rows and "
                                "timeout_s > 0")
