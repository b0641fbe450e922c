"""The BigQuery source's settings: where the tables are and how they are read."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.settings.fields import choice, env, integer, number

READ_APIS = ("auto", "storage", "rest")
CLICKS_READS = ("auto", "storage_read", "query")


@dataclass(frozen=True)
class BigQuerySettings:
    """Where the tables are and how to read them. ``endpoint`` (and ``storage_endpoint``, host:port
    of its gRPC Storage Read API) point at an emulator, with anonymous credentials. Identifiers and
    the required project and dataset are checked when a source is opened
    (:func:`pipeline.data.bigquery.settings.checked`)."""

    project: str = env("PIPELINE_BIGQUERY_PROJECT", "", "project of the dataset, also billed (required)")
    dataset: str = env("PIPELINE_BIGQUERY_DATASET", "", "the dataset (required)")
    location: str = env("PIPELINE_BIGQUERY_LOCATION", "",
                        "location of the dataset, e.g. `US`, `asia-southeast1`; unset = the client's default")
    clicks_table: str = env("PIPELINE_BIGQUERY_CLICKS_TABLE", "clicks", "click table, partitioned by DAY")
    day_column: str = env("PIPELINE_BIGQUERY_DAY_COLUMN", "day", "the click table's DATE partitioning column")
    users_table: str = env("PIPELINE_BIGQUERY_USERS_TABLE", "user_features", "user feature table")
    restaurants_table: str = env("PIPELINE_BIGQUERY_RESTAURANTS_TABLE", "restaurant_features",
                                 "restaurant feature table")
    test_table: str = env("PIPELINE_BIGQUERY_TEST_TABLE", "test_clicks", "held-out click rows, the release gate")
    requests_table: str = env("PIPELINE_BIGQUERY_REQUESTS_TABLE", "requests",
                              "recommendation requests for the scoring benchmark")
    click_events_table: str = env("PIPELINE_BIGQUERY_CLICK_EVENTS_TABLE", "click_events", (
        "click events (request_id, restaurant_id, clicked_at, clicked; docs/SERVING.md), partitioned by DAY on "
        "the same DATE column as the click table"))
    credentials_file: str = env("GOOGLE_APPLICATION_CREDENTIALS", "", (
        "a service-account key file; unset = application-default credentials "
        "(`gcloud auth application-default login`, or the VM's service account)"))
    endpoint: str = env("PIPELINE_BIGQUERY_ENDPOINT", "",
                        "an emulator's REST URL, e.g. `http://127.0.0.1:9050`; set, the credentials are anonymous")
    storage_endpoint: str = env("PIPELINE_BIGQUERY_STORAGE_ENDPOINT", "",
                                "host:port of the emulator's Storage Read API (gRPC)")
    read_api: str = env("PIPELINE_BIGQUERY_READ_API", "auto",
                        "`auto` (Storage Read API when installed), `storage`, `rest`", choice(*READ_APIS))
    clicks_read: str = env("PIPELINE_BIGQUERY_CLICKS_READ", "auto", (
        "how a day of clicks is read: `auto` (`storage_read` with the Storage API, else `query`), `storage_read` "
        "(a read session restricted to the day's partition), `query` (`@day` parameter)"), choice(*CLICKS_READS))
    maximum_bytes_billed: int = env("PIPELINE_BIGQUERY_MAX_BYTES_BILLED", 1 << 30,
                                    "the most one read may bill, checked before reading; `0`: no cap",
                                    integer(0, "a number of bytes"))
    timeout_s: float = env("PIPELINE_BIGQUERY_TIMEOUT_S", 60.0,
                           "timeout of every request, seconds (the client's retries stop at 3×)",
                           number("a number of seconds", positive=True))
    stream_timeout_s: float = field(default=3600.0)
    page_rows: int = field(default=20_000)  # a REST page costs ~3.5 KB a row while decoded: ~70 MB

    def table_id(self, table: str) -> str:
        return f"{self.project}.{self.dataset}.{table}"
