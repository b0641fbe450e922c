"""A BigQuery API endpoint on loopback (local-bigquery 0.3.2, DuckDB inside) for tests, benchmarks and
trying the BigQuery source without a Google account; and loading a reference-format dataset into it.

The emulator runs from its own Python 3.13 environment, ``.venv-bigquery`` (``make bigquery-emulator``
builds it from devtools/bigquery-emulator.lock; its dependencies never enter the project's). Run by hand::

    .venv/bin/python -m pipeline_devtools.bigquery_emulator --load data/dataset

starts it, loads the dataset and prints the settings that point the pipeline at it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import os
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.data.layout import ReferenceDataset, parse_day
from pipeline_devtools import CHECKOUT
from pipeline_devtools.commands import stop
from pipeline_devtools.redis_server import free_port

ENV_DIR = Path(os.environ.get("PIPELINE_BIGQUERY_EMULATOR_ENV", CHECKOUT / ".venv-bigquery"))
PROJECT = "test-project"
DATASET = "pipeline"
"""The dataset the tests load the tiny reference dataset into."""


@dataclass(frozen=True)
class Emulator:
    endpoint: str           # REST, http://127.0.0.1:P
    storage_endpoint: str   # gRPC Storage Read API, 127.0.0.1:G
    project: str
    process: subprocess.Popen

    def client(self):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        return bigquery.Client(project=self.project, credentials=AnonymousCredentials(),
                               client_options={"api_endpoint": self.endpoint})

    def source_resource(self, **fields):
        """The pipeline's BigQuery source resource reading this emulator; ``fields`` set the others
        (``dataset`` …) or override these."""
        from pipeline.defs.resources import BigQuerySourceResource  # here: the benchmarks run without Dagster

        return BigQuerySourceResource(**{"project": self.project, "endpoint": self.endpoint,
                                         "storage_endpoint": self.storage_endpoint, **fields})

    def settings(self, dataset: str) -> dict[str, str]:
        """The environment that points the pipeline at this emulator."""
        return {"PIPELINE_SOURCE": "bigquery", "PIPELINE_BIGQUERY_PROJECT": self.project,
                "PIPELINE_BIGQUERY_DATASET": dataset, "PIPELINE_BIGQUERY_ENDPOINT": self.endpoint,
                "PIPELINE_BIGQUERY_STORAGE_ENDPOINT": self.storage_endpoint}


def _executable() -> Path:
    binary = ENV_DIR / "bin" / "local-bigquery"
    if not binary.exists():
        raise FileNotFoundError(f"the BigQuery emulator is not installed at {ENV_DIR}: run `make bigquery-emulator` "
                                "(needs Python 3.13: python3.13 on PATH, or pyenv's 3.13.0)")
    return binary


@contextlib.contextmanager
def bigquery_emulator(timeout_s: float = 60.0) -> Iterator[Emulator]:
    """Start the emulator on free loopback ports with an empty data directory; stop it afterwards."""
    binary = _executable()
    with tempfile.TemporaryDirectory(prefix="bigquery-emulator-") as data_dir:
        port, grpc_port = free_port(), free_port()
        # DuckDB finds the extension wheels' files only under $HOME/.duckdb (make bigquery-emulator links them).
        env = {**os.environ, "HOME": str(ENV_DIR / "home")}
        log = open(Path(data_dir) / "emulator.log", "wb")  # noqa: SIM115 (closed below)
        process = subprocess.Popen([str(binary), "serve", "--host", "127.0.0.1", "--port", str(port),
                                    "--grpc-port", str(grpc_port), "--project", PROJECT,
                                    "--data-dir", str(Path(data_dir) / "data")],
                                   stdout=log, stderr=subprocess.STDOUT, env=env)
        emulator = Emulator(f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}", PROJECT, process)
        try:
            _wait_ready(emulator, timeout_s, Path(data_dir) / "emulator.log")
            yield emulator
        finally:
            stop(process, timeout_s=10)
            log.close()


def _wait_ready(emulator: Emulator, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    url = f"{emulator.endpoint}/bigquery/v2/projects/{emulator.project}/datasets"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if emulator.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the BigQuery emulator did not start ({emulator.endpoint}):\n"
                               + log.read_text(errors="replace")[-2000:])
        time.sleep(0.2)


def load_table(client, table_id: str, table: pa.Table, partition_column: str | None = None,
               append: bool = False) -> None:
    """Load ``table`` into ``table_id`` with a load job (partitioned by DAY on ``partition_column`` if given)."""
    from google.cloud import bigquery

    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    buffer.seek(0)
    config = bigquery.LoadJobConfig(
        source_format="PARQUET", write_disposition="WRITE_APPEND" if append else "WRITE_TRUNCATE",
        time_partitioning=bigquery.TimePartitioning(field=partition_column) if partition_column else None)
    client.load_table_from_file(buffer, table_id, job_config=config, timeout=120).result(timeout=300)
    # The emulator keeps no metadata of a table a load job created unpartitioned (its modified time is
    # "now" on every read, its etag None) until the table is updated: give it a stable version.
    touch_table(client, table_id)


def touch_table(client, table_id: str) -> None:
    """Update the table's labels: a new modified time and etag (a new version of the table)."""
    table = client.get_table(table_id, timeout=30)
    table.labels = {**table.labels, "touched": str(time.time_ns())}
    client.update_table(table, ["labels"], timeout=30)


def with_day(table: pa.Table, day: dt.date, column: str = "day") -> pa.Table:
    return table.append_column(column, pa.array([day] * len(table), pa.date32()))


def load_reference_dataset(client, dataset: str, root: Path, start_date: str, days: int | None = None) -> None:
    """Load a reference-format directory into ``dataset``: clicks partitioned by DAY on ``day`` (shard N
    is day start_date + N; the first ``days`` shards when given), the feature tables, ``test_clicks``
    (every test file) and ``requests``."""
    reference = ReferenceDataset(Path(root), parse_day(start_date))
    client.create_dataset(dataset, exists_ok=True, timeout=30)
    table_id = f"{client.project}.{dataset}"
    for n, (shard, path) in enumerate(reference.train_shards().items()):
        if days is not None and n >= days:
            break
        load_table(client, f"{table_id}.clicks", with_day(pq.read_table(path), reference.day_of_shard(shard)),
              "day", append=n > 0)
    load_table(client, f"{table_id}.user_features", pq.read_table(reference.user_features))
    load_table(client, f"{table_id}.restaurant_features", pq.read_table(reference.restaurant_features))
    load_table(client, f"{table_id}.test_clicks", pa.concat_tables(pq.read_table(p) for p in reference.test_files()))
    load_table(client, f"{table_id}.requests", pq.read_table(reference.requests))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load", type=Path, help="a reference-format dataset directory to load")
    parser.add_argument("--dataset", default="pipeline", help="BigQuery dataset to load it into")
    parser.add_argument("--start-date", default=os.environ.get("PIPELINE_START_DATE", "2026-01-01"))
    args = parser.parse_args()
    with bigquery_emulator() as emulator:
        if args.load:
            load_reference_dataset(emulator.client(), args.dataset, args.load, args.start_date)
        print("BigQuery emulator running; point the pipeline at it with:")
        for name, value in emulator.settings(args.dataset).items():
            print(f"  export {name}={value}")
        print("Ctrl-C stops it (its data is discarded).")
        try:
            emulator.process.wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
