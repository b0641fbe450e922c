"""BigQuery's errors as the pipeline's, and the refusal of a read over the cost cap."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from pipeline.data.sources import SourceConfigError, TransientSourceError

NO_CREDENTIALS = ("no Google credentials for the BigQuery source: set GOOGLE_APPLICATION_CREDENTIALS to a "
                  "service-account key file (or the source resource's credentials_file), or run "
                  "`gcloud auth application-default login`; for an emulator set PIPELINE_BIGQUERY_ENDPOINT")


class CostCapExceeded(ValueError):
    """A read would cost more than ``maximum_bytes_billed``; nothing was read."""


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """BigQuery's errors as the pipeline's: a missing dataset or table → FileNotFoundError naming
    it; other 4xx → ValueError (never retried); 5xx, throttling and broken connections →
    :class:`TransientSourceError` (retried by the step's RetryPolicy)."""
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc
    from requests import exceptions as http_exc

    try:
        yield
    except gexc.NotFound as exc:
        raise FileNotFoundError(f"{what} not found: {message(exc)}") from exc
    except (gexc.TooManyRequests, gexc.ServerError, gexc.DeadlineExceeded, gexc.RetryError,
            http_exc.ConnectionError, http_exc.Timeout, ConnectionError, TimeoutError) as exc:
        raise TransientSourceError(f"{what}: {type(exc).__name__}: {message(exc)}") from exc
    except gexc.ClientError as exc:
        raise ValueError(f"{what}: {message(exc)}") from exc
    except auth_exc.DefaultCredentialsError as exc:
        raise SourceConfigError(NO_CREDENTIALS) from exc


def message(exc: Exception) -> str:
    """BigQuery's own words (its first error), without the request's URL."""
    errors = getattr(exc, "errors", None) or []
    first = errors[0] if errors and isinstance(errors[0], dict) else {}
    return first.get("message") or getattr(exc, "message", None) or str(exc).splitlines()[0]
