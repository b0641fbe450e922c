"""Embedded defaults, each overridable by an environment variable (see README: Configuration).

Dagster-free so the command line and the pure modules read the same settings as the pipeline.
"""

from __future__ import annotations

import os

DEFAULTS = {
    "PIPELINE_DATASET_DIR": "data/dataset",
    "PIPELINE_WAREHOUSE_DIR": "data/warehouse",
    "PIPELINE_START_DATE": "2026-01-01",
    # the last click partition: empty = the dataset's last day; "open" = yesterday (production); or YYYY-MM-DD
    "PIPELINE_END_DATE": "",
    # where raw data comes from: local (a reference-format directory) or bigquery
    "PIPELINE_SOURCE": "local",
    "PIPELINE_BIGQUERY_PROJECT": "",
    "PIPELINE_BIGQUERY_DATASET": "",
    "PIPELINE_BIGQUERY_LOCATION": "",
    "PIPELINE_BIGQUERY_CLICKS_TABLE": "clicks",
    "PIPELINE_BIGQUERY_DAY_COLUMN": "day",
    "PIPELINE_BIGQUERY_USERS_TABLE": "user_features",
    "PIPELINE_BIGQUERY_RESTAURANTS_TABLE": "restaurant_features",
    "PIPELINE_BIGQUERY_TEST_TABLE": "test_clicks",
    "PIPELINE_BIGQUERY_REQUESTS_TABLE": "requests",
    "GOOGLE_APPLICATION_CREDENTIALS": "",
    "PIPELINE_BIGQUERY_ENDPOINT": "",          # an emulator's REST endpoint (anonymous credentials)
    "PIPELINE_BIGQUERY_STORAGE_ENDPOINT": "",  # its gRPC Storage Read API, host:port
    "PIPELINE_BIGQUERY_READ_API": "auto",      # auto (Storage Read API when installed), storage, rest
    "PIPELINE_BIGQUERY_CLICKS_READ": "auto",   # auto (storage_read when the Storage API is used), query
    "PIPELINE_BIGQUERY_MAX_BYTES_BILLED": str(1 << 30),
    "PIPELINE_BIGQUERY_TIMEOUT_S": "60",
    "PIPELINE_EXECUTOR": "multiprocess",
    "PIPELINE_MAX_CONCURRENT": "2",
    # days per run of a click backfill: 0 = one run however long (fastest on one machine); N = runs of N days
    "PIPELINE_BACKFILL_DAYS_PER_RUN": "0",
    # PIPELINE_EXECUTOR=celery (docs/OPERATIONS.md): the broker the runs and `pipeline worker` share, the result
    # backend (empty: the broker's URL), the timeout of every broker call, steps at once per worker, and the
    # resident size after which a worker's step process is replaced (MiB)
    "PIPELINE_CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
    "PIPELINE_CELERY_BACKEND_URL": "",
    "PIPELINE_CELERY_TIMEOUT_S": "10",
    "PIPELINE_WORKER_CONCURRENCY": "1",
    "PIPELINE_WORKER_MAX_MEMORY_MIB": "3072",
    # training's native kernels (pipeline/model/native): auto (build with $CC, else the torch path), required, off;
    # where they are built (empty: ~/.cache/restaurant-pipeline/native)
    "PIPELINE_NATIVE_KERNELS": "auto",
    "PIPELINE_NATIVE_CACHE_DIR": "",
    # the largest fall (a fraction of the live version's rows or ids) a feature snapshot or an online store load may
    # make without the run's allow_shrink; a table with 0 rows is never published (pipeline/data/shrink.py)
    "PIPELINE_MAX_SHRINK_FRACTION": "0.05",
    # free space every large warehouse write (a checkpoint, a processed day, a snapshot, an export) must leave,
    # MiB; checked before the write (pipeline/disk_space.py). 256: above the largest single write at full size
    # (the user snapshot, ~120 MB) so an estimate short by a version's growth still cannot fill the disk, and
    # room for what shares it (SQLite, Dagster's storage and logs); 0 turns the check off
    "PIPELINE_MIN_FREE_MB": "256",
    # the export's check in a fresh interpreter (load both formats, compare, time them; ~10-20 s here): longer
    # means it hung (pipeline/model/export.py)
    "PIPELINE_EXPORT_VERIFY_TIMEOUT_S": "300",
    "PIPELINE_SQLITE_PATH": "data/online/features.db",
    "PIPELINE_ONLINE_STORE": "",  # sqlite or redis; empty: redis when REDIS_URL is set, else sqlite
    # redis://[[user]:password@]host:port/db, or rediss:// (TLS) verified with PIPELINE_REDIS_CA_FILE (a PEM file;
    # empty: the system's CAs); the CA file also verifies a rediss:// Celery broker and result backend
    "REDIS_URL": "",
    "PIPELINE_REDIS_CA_FILE": "",
    # the API (pipeline/api/limits.py)
    "PIPELINE_STORE_TIMEOUT_MS": "200",
    "PIPELINE_API_DEADLINE_MS": "500",
    "PIPELINE_API_MAX_BODY_BYTES": "262144",
    "PIPELINE_API_HEADER_TIMEOUT_S": "5",
    "PIPELINE_API_BODY_TIMEOUT_S": "5",
    # an idle keep-alive connection's wait for its next request; request line + headers cap (431 over it);
    # open connections per worker (503 over it); after an early answer (413, 408, 431), how long and how much
    # of what the client still sends is read and discarded before closing, so the client reads the answer
    "PIPELINE_API_KEEPALIVE_S": "5",
    "PIPELINE_API_MAX_HEADER_BYTES": "16384",
    "PIPELINE_API_MAX_CONNECTIONS": "1000",
    "PIPELINE_API_LINGER_S": "5",
    "PIPELINE_API_LINGER_BYTES": str(64 << 20),
    # after SIGTERM: seconds /health answers 503 "draining" while requests are still served, then at most
    # PIPELINE_API_GRACEFUL_S for the answers in progress (docs/OPERATIONS.md: pairing with a load balancer)
    "PIPELINE_API_DRAIN_S": "5",
    "PIPELINE_API_GRACEFUL_S": "5",
    "PIPELINE_API_POLL_INTERVAL_S": "1",
    # a bearer token /recommend requires (Authorization: Bearer <token>); empty: no authentication
    "PIPELINE_API_TOKEN": "",
}


def setting(name: str) -> str:
    """The value in force: the environment's, else the embedded default."""
    return os.environ.get(name) or DEFAULTS[name]
