"""The settings groups other than BigQuery's, one frozen dataclass per concern."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.settings.fields import choice, day, env, fraction, integer, number, text

SOURCES = ("local", "bigquery")
EXECUTORS = ("multiprocess", "in_process", "celery", "k8s")
NATIVE_MODES = ("auto", "required", "off")
STORE_BACKENDS = ("sqlite", "redis")
OPEN_ENDED = "open"


@dataclass(frozen=True)
class PathSettings:
    dataset_dir: str = env("PIPELINE_DATASET_DIR", "data/dataset", "the reference-format dataset read by the "
                                                                   "local source")
    warehouse_dir: str = env("PIPELINE_WAREHOUSE_DIR", "data/warehouse", "where the pipeline writes")


@dataclass(frozen=True)
class SourceSettings:
    kind: str = env("PIPELINE_SOURCE", "local", "`local` (the dataset directory) or `bigquery` (settings: "
                                                "\"Reading from BigQuery\")", choice(*SOURCES))
    start_date: str = env("PIPELINE_START_DATE", "2026-01-01", "first daily partition = day of shard `train_00`",
                          day())
    end_date: str = env("PIPELINE_END_DATE", "", (
        "last daily partition: unset = the dataset's last day (with BigQuery: `open`); `open` = yesterday "
        "(production); or `YYYY-MM-DD`"), day(OPEN_ENDED))


@dataclass(frozen=True)
class DagsterSettings:
    executor: str = env("PIPELINE_EXECUTOR", "multiprocess", "`multiprocess`, `in_process`, `celery`, `k8s`",
                        choice(*EXECUTORS))
    max_concurrent: int = env("PIPELINE_MAX_CONCURRENT", 2, (
        "steps at once per run under the multiprocess executor; step jobs at once per run under `k8s`"),
        integer(1, "a number of steps"))
    backfill_days_per_run: int = env("PIPELINE_BACKFILL_DAYS_PER_RUN", 0, (
        "a click backfill as one run (0), or as runs of N days spread over workers"),
        integer(0, "0 (one run per backfill) or a number of days per run"))


@dataclass(frozen=True)
class CelerySettings:
    broker_url: str = env("PIPELINE_CELERY_BROKER_URL", "redis://127.0.0.1:6379/0", (
        "the Celery broker of the runs and the workers; a password in the URL, `rediss://` for TLS (\"Secrets\")"))
    backend_url: str = env("PIPELINE_CELERY_BACKEND_URL", "", "the Celery result backend; unset = the broker's URL")
    timeout_s: float = env("PIPELINE_CELERY_TIMEOUT_S", 10.0, "timeout of every broker and result-backend call",
                           number("a number of seconds", positive=True))
    worker_concurrency: int = env("PIPELINE_WORKER_CONCURRENCY", 1, "steps at once per `pipeline worker`",
                                  integer(1, "a number of steps"))
    worker_max_memory_mib: int = env("PIPELINE_WORKER_MAX_MEMORY_MIB", 3072, (
        "a worker's step process above this resident size (MiB) is replaced after its step"),
        integer(1, "a number of MiB"))

    @property
    def result_backend_url(self) -> str:
        return self.backend_url or self.broker_url


@dataclass(frozen=True)
class NativeSettings:
    kernels: str = env("PIPELINE_NATIVE_KERNELS", "auto", (
        "training's native step (docs/MODEL.md): `auto` builds it with `$CC` and `$CXX` against torch's headers "
        "and falls back to the torch path, saying why, when it cannot; `required` fails instead; `off`"),
        choice(*NATIVE_MODES))
    cache_dir: str = env("PIPELINE_NATIVE_CACHE_DIR", "", (
        "where it is built (per machine); unset = `$XDG_CACHE_HOME/restaurant-pipeline/native`"))
    compiler: str = env("CC", "cc", "the C compiler that builds it")
    cxx_compiler: str = env("CXX", "c++", "the C++ compiler that builds its matrix products (torch's C++ API)")
    xdg_cache_home: str = env("XDG_CACHE_HOME", "", "the user's cache directory; unset = `~/.cache`")

    def build_dir(self) -> Path:
        """Where the native step is built."""
        if self.cache_dir:
            return Path(self.cache_dir)
        return Path(self.xdg_cache_home or Path.home() / ".cache") / "restaurant-pipeline" / "native"


@dataclass(frozen=True)
class PublishingSettings:
    min_free_mb: float = env("PIPELINE_MIN_FREE_MB", 256.0, (
        "free space (MiB) every publish and large warehouse write must leave, checked before it starts "
        "(\"A full disk\"); `0` = no check"), number("a number of MiB"))
    max_shrink_fraction: float = env("PIPELINE_MAX_SHRINK_FRACTION", 0.05, (
        "the largest fall (fraction of the live version's rows, or of its ids for snapshots) a feature snapshot "
        "or an online store load may make without the run's `allow_shrink`; a table with 0 rows is never "
        "published (\"Publishing\")"), fraction())
    export_verify_timeout_s: float = env("PIPELINE_EXPORT_VERIFY_TIMEOUT_S", 300.0, (
        "the export's check in a fresh process is killed after this, failing the export (the previous one stays "
        "live)"), number("a number of seconds", positive=True))


@dataclass(frozen=True)
class OnlineStoreSettings:
    redis_url: str = env("REDIS_URL", "", (
        "e.g. `redis://:PASSWORD@127.0.0.1:6379/0`, `redis://USER:PASSWORD@…` or `rediss://…` (TLS): the online "
        "store is Redis (\"Secrets\")"))
    redis_ca_file: str = env("PIPELINE_REDIS_CA_FILE", "", (
        "PEM CA file verifying a `rediss://` online store, broker and result backend; unset = the system's CAs"))
    backend: str = env("PIPELINE_ONLINE_STORE", "", "`sqlite` or `redis`, overriding the choice above",
                       choice(*STORE_BACKENDS))
    sqlite_path: str = env("PIPELINE_SQLITE_PATH", "data/online/features.db", "the SQLite online store file")


_SECONDS = number("a number of seconds", positive=True)


@dataclass(frozen=True)
class ApiSettings:
    store_timeout_ms: float = env("PIPELINE_STORE_TIMEOUT_MS", 200.0, (
        "the API's connect and read timeout for every store call"), number("a number of milliseconds", positive=True))
    deadline_ms: float = env("PIPELINE_API_DEADLINE_MS", 500.0, (
        "a recommendation's whole time on the API's thread pool (must exceed the store timeout)"),
        number("a number of milliseconds", positive=True))
    # 262144: 10,000 int64 candidate ids fit in ~210 KB of JSON
    max_body_bytes: int = env("PIPELINE_API_MAX_BODY_BYTES", 262144, "larger request bodies get 413 before parsing",
                              integer(1, "a number of bytes"))
    header_timeout_s: float = env("PIPELINE_API_HEADER_TIMEOUT_S", 5.0, (
        "a connection whose request headers (a pipelined request's too) are not complete within this of its first "
        "byte (or of the connection opening) gets 408 and is closed"), _SECONDS)
    body_timeout_s: float = env("PIPELINE_API_BODY_TIMEOUT_S", 5.0, (
        "a request body not complete by then gets 408 (or, when the request was already answered without reading "
        "it, the connection is closed)"), _SECONDS)
    keepalive_s: float = env("PIPELINE_API_KEEPALIVE_S", 5.0, (
        "an idle keep-alive connection is closed when its next request does not begin within this"), _SECONDS)
    max_header_bytes: int = env("PIPELINE_API_MAX_HEADER_BYTES", 16384, (
        "request line and headers over this get 431 (as soon as that many bytes arrived)"),
        integer(1, "a number of bytes"))
    max_connections: int = env("PIPELINE_API_MAX_CONNECTIONS", 1000, (
        "open connections per worker; the request of one opened over the cap gets 503 and `Retry-After: 1`"),
        integer(1, "a number of connections"))
    linger_s: float = env("PIPELINE_API_LINGER_S", 5.0, (
        "after an early answer (413, 408, 431, 503 over the cap) the server reads and discards what the client "
        "still sends for at most this long, then closes: the client reads its answer instead of a reset"), _SECONDS)
    linger_bytes: int = env("PIPELINE_API_LINGER_BYTES", 64 << 20, "and at most this much",
                            integer(1, "a number of bytes"))
    drain_s: float = env("PIPELINE_API_DRAIN_S", 5.0, (
        "after SIGTERM, seconds `/health` answers 503 `draining` while requests are still served (0: stop at "
        "once); see \"Kubernetes, step by step\""), number("a number of seconds"))
    graceful_s: float = env("PIPELINE_API_GRACEFUL_S", 5.0, "then, at most this long for the answers in progress",
                            _SECONDS)
    model_format: str = env("PIPELINE_API_MODEL_FORMAT", "recorded", (
        "which verified format of the export the API serves: `recorded` = the fastest, as the export measured and "
        "recorded it; `onnx` serves ONNX Runtime and never imports torch (a server installed without torch must); "
        "a version without that format is rejected (\"Serving without torch\")"),
        choice("recorded", "onnx", "torchscript", "exported_program"))
    poll_interval_s: float = env("PIPELINE_API_POLL_INTERVAL_S", 1.0, (
        "how often the API looks for newly published artifacts (`--poll-interval`)"), _SECONDS)
    token: str = env("PIPELINE_API_TOKEN", "", (
        "a bearer token `/recommend` requires (≥ 16 characters); unset = no authentication (\"Secrets\")"), text())


@dataclass(frozen=True)
class FeedbackSettings:
    impression_log: str = env("PIPELINE_IMPRESSION_LOG", "on", (
        "`on`: every answered `/recommend` is logged off the response path (docs/SERVING.md, \"The impression "
        "log\"); `off`: nothing is logged"), choice("on", "off"))
    impression_log_dir: str = env("PIPELINE_IMPRESSION_LOG_DIR", "", (
        "where the API's workers publish impression log segments; unset = `WAREHOUSE/impression_log`"))
    flush_s: float = env("PIPELINE_IMPRESSION_FLUSH_S", 1.0, (
        "a worker publishes a segment of what it queued at least this often (what a SIGKILL may lose)"), _SECONDS)
    flush_records: int = env("PIPELINE_IMPRESSION_FLUSH_RECORDS", 5000, (
        "and as soon as this many records are queued"), integer(1, "a number of records"))
    queue_records: int = env("PIPELINE_IMPRESSION_QUEUE_RECORDS", 50000, (
        "records a worker queues at most; past it records are dropped and counted, never blocking an answer"),
        integer(1, "a number of records"))
    exploration_epsilon: float = env("PIPELINE_EXPLORATION_EPSILON", 0.0, (
        "the share of score-sorted answers in which one of the lower slots shows a restaurant chosen uniformly "
        "among the others within range (its propensity logged); 0 = no exploration"), fraction())
    click_events_dir: str = env("PIPELINE_CLICK_EVENTS_DIR", "data/click_events", (
        "where the local source finds click events (`date=YYYY-MM-DD/*.parquet`, docs/SERVING.md; `pipeline "
        "simulate` writes there)"))

    @property
    def logging(self) -> bool:
        return self.impression_log == "on"

    def log_dir(self, warehouse_dir: str | Path) -> Path:
        """The impression log's directory (absolute)."""
        return Path(self.impression_log_dir or Path(warehouse_dir) / "impression_log").resolve()


@dataclass(frozen=True)
class ReleaseSettings:
    canary_share: float = env("PIPELINE_CANARY_SHARE", 0.1, (
        "the share of users the challenger answers while one is out (by a hash of user id and challenger "
        "version: a user sees one model); 0 = no canary, the challenger is only shadow-scored (docs/OPERATIONS.md, "
        "\"Releasing a model\")"), fraction())
    shadow_share: float = env("PIPELINE_SHADOW_SHARE", 0.5, (
        "the share of requests on which the model that did not answer scores the same candidates (logged, never "
        "changing the answer); 1 = all, which measured ~11% of capacity against the 10% budget "
        "(docs/PERFORMANCE.md); 0 = no shadow scoring"), fraction())
    operator: str = env("PIPELINE_OPERATOR", "", (
        "who `pipeline promote`, `retire`, `challenge` and `rollback model` record as deciding (`--by` overrides); "
        "unset = the login name"))
    mlflow_tracking_uri: str = env("PIPELINE_MLFLOW_TRACKING_URI", "", (
        "with the `mlflow` extra installed: an MLflow tracking store (e.g. `sqlite:////srv/mlflow/mlflow.db` or "
        "`http://mlflow:5000`) that training runs and exports are logged to and the roles mirrored to as "
        "model-version aliases; unset = off. The pipeline never reads its decisions from MLflow"))
