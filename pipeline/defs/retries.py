"""Retrying what is worth retrying: a source's transient errors, never a bad request.

The assets that read the source (raw_clicks, the feature snapshots) carry ``SOURCE_RETRY``. Inside
them, :func:`only_transient_retried` lets a :class:`~pipeline.data.sources.TransientSourceError`
(5xx, throttling, a dropped connection, after the client's own retries) through to the policy and
turns every other error (a 4xx, a missing table or column, a rejected candidate, a missing setting)
into a failure the policy does not retry: it would fail the same way again.
"""

import contextlib
from collections.abc import Iterator

import dagster as dg

from pipeline.data.sources import TransientSourceError

SOURCE_RETRY = dg.RetryPolicy(max_retries=3, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


@contextlib.contextmanager
def only_transient_retried() -> Iterator[None]:
    try:
        yield
    except (TransientSourceError, dg.Failure):
        raise
    except Exception as exc:
        raise dg.Failure(description=f"{type(exc).__name__}: {exc}", allow_retries=False) from exc
