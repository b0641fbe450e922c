"""Raw data from Google BigQuery, streamed into the same raw files the local source offers.

Tables (names configurable): ``clicks`` (user_id, restaurant_id, click INT64, partitioned by DAY on
a DATE column, ``day`` by default), ``user_features``, ``restaurant_features``, ``test_clicks``
(the held-out rows) and ``requests``.

How rows are read, chosen by measured speed and price (docs/OPERATIONS.md, docs/PERFORMANCE.md):

- a day of clicks: with the Storage Read API, a read session on the table restricted to the day's
  partition (no query job; billed as storage bytes read); without it, a query with the day as a
  ``@day`` parameter (dry run first, then ``maximum_bytes_billed``), its result paged over REST.
  ``clicks_read="query"`` forces the query, read through the Storage API when available;
- a whole table (features, held-out rows, requests): a read session, or ``tabledata.list`` pages
  (free) without the Storage API.

Every read streams: pages are written to parquet as they arrive (row groups of at most
``page_rows`` rows), so memory does not grow with the table. The client never builds a Storage
client of its own (it would aim at the public endpoint); every call has a timeout, transient
errors are retried by the client (never a 4xx), and are raised as
:class:`~pipeline.data.sources.TransientSourceError` when retries run out. Identifiers are
validated; values enter SQL only as query parameters.

Modules: ``settings`` (checks of :class:`~pipeline.settings.BigQuerySettings`), ``errors``
(BigQuery's errors as the pipeline's), ``clients`` (the REST and Storage Read clients), ``reads``
(the read paths), ``sink`` (Arrow schemas and the streaming parquet writer), ``source`` (the
:class:`~pipeline.data.sources.Source` protocol over them).
"""

from pipeline.data.bigquery.errors import CostCapExceeded
from pipeline.data.bigquery.reads import ReadStats
from pipeline.data.bigquery.sink import arrow_schema
from pipeline.data.bigquery.source import BigQuerySource
from pipeline.settings.bigquery import BigQuerySettings

__all__ = ["BigQuerySettings", "BigQuerySource", "CostCapExceeded", "ReadStats", "arrow_schema"]
