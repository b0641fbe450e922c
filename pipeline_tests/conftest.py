"""The environment every test runs in, and the fixtures tests of several packages share: the tiny
generated dataset, a redis-server, the tiny dataset's serving artifacts, the BigQuery emulator.
The helpers tests share are plain functions of the development package (``pipeline_devtools``)."""

from __future__ import annotations

import datetime as dt
import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import runtime
from pipeline.data.generate import generate
from pipeline.data.layout import ReferenceDataset
from pipeline.model.reproducible import enable_reproducible_blas
from pipeline.serving import telemetry
from pipeline.settings import load_settings
from pipeline_devtools.datasets import START, TINY
from pipeline_devtools.warehouse_build import build_warehouse

TEST_ENVIRONMENT = {
    # Tests use days of January 2026 whatever dataset (if any) data/dataset holds: partitions to yesterday.
    "PIPELINE_END_DATE": "open",
    # Training's native kernels must build here (gcc is part of the machine): no test silently takes the
    # torch path, in this process and in the processes the tests start (their entry points read it).
    "PIPELINE_NATIVE_KERNELS": "required",
    # As the entry points do: ONNX Runtime's telemetry off (no upload, cache or session file).
    telemetry.VARIABLE: "1",
}
_ENVIRONMENT = pytest.StashKey[pytest.MonkeyPatch]()


def pytest_configure(config: pytest.Config) -> None:
    """Before any test module is imported (importing the Dagster layer parses the settings): the test
    environment, where the caller's own values do not say otherwise; the same bits on any thread count,
    set before this process's first matrix product; the settings handed to the modules, as the pipeline's
    entry points do."""
    patch = pytest.MonkeyPatch()
    for name, value in TEST_ENVIRONMENT.items():
        if name not in os.environ:
            patch.setenv(name, value)
    config.stash[_ENVIRONMENT] = patch
    enable_reproducible_blas()
    runtime.configure(load_settings())


def pytest_unconfigure(config: pytest.Config) -> None:
    """The caller's environment again."""
    if _ENVIRONMENT in config.stash:
        config.stash[_ENVIRONMENT].undo()


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> ReferenceDataset:
    """A small reference-format dataset, generated once per test session (read-only)."""
    root = tmp_path_factory.mktemp("dataset")
    generate(root, TINY, progress=False)
    return ReferenceDataset(root, START)


@pytest.fixture
def dataset_copy(tiny_dataset, tmp_path) -> ReferenceDataset:
    """A writable copy of the tiny dataset: its own files (not hard links), so a test may rewrite
    them in place without touching the session's dataset."""
    root = tmp_path / "dataset"
    for src in tiny_dataset.root.rglob("*.parquet"):
        dst = root / src.relative_to(tiny_dataset.root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    return ReferenceDataset(root, START)


@pytest.fixture(scope="session")
def redis_url():
    """A real redis-server (Debian package) on a free loopback port, stopped after the session."""
    from pipeline_devtools.redis_server import local_redis_server

    if shutil.which("redis-server") is None:
        message = "redis-server is not installed (apt-get install -y redis-server; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with local_redis_server() as url:
        yield url


@pytest.fixture
def password_redis(tmp_path):
    """A redis-server of the test's own that needs ``pipeline_devtools.leaks.PASSWORD``, stopped after it."""
    from pipeline_devtools.leaks import PASSWORD
    from pipeline_devtools.redis_server import RedisServer

    server = RedisServer(str(tmp_path), password=PASSWORD).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def serving_artifacts(tiny_dataset, tmp_path_factory):
    """Snapshots, a trained and exported model, and the geo index of the tiny dataset."""
    import torch

    from pipeline.geo.index import GeoIndex
    from pipeline.model.batches import FeatureTables
    from pipeline.model.checkpoint import load_checkpoint_model
    from pipeline.model.export import publish_export
    from pipeline.model.training import TrainConfig, train

    warehouse = build_warehouse(tiny_dataset, tmp_path_factory.mktemp("serving"), chunk_rows=4000)
    train(warehouse, TrainConfig(mode="full", epochs=3, batch_size=512, threads=1), log=lambda message: None)
    model, state = load_checkpoint_model(warehouse.checkpoint)
    tables = FeatureTables.load(warehouse)
    sample = torch.cat([tables.users[:256], tables.restaurants[:256]], dim=1)
    publish_export(model, warehouse.export, sample, record={"feature_versions": state.versions})
    restaurants = tables.restaurant_snapshot
    geo = GeoIndex.build(restaurants.ids, restaurants.locations[:, 0], restaurants.locations[:, 1])
    geo.publish(warehouse.geo_index, restaurants.ids)
    return warehouse, tables, geo, model


@pytest.fixture(scope="module")
def emulator(tiny_dataset):
    """The BigQuery emulator with the tiny dataset loaded as ``pipeline_devtools.bigquery_emulator.DATASET``
    (clicks partitioned by day) and a few broken tables, for a module's tests."""
    from pipeline_devtools.bigquery_emulator import (
        DATASET,
        bigquery_emulator,
        load_reference_dataset,
        load_table,
        with_day,
    )

    day = "2026-01-02"
    with bigquery_emulator() as emulator:
        client = emulator.client()
        load_reference_dataset(client, DATASET, tiny_dataset.root, "2026-01-01")
        clicks = with_day(pq.read_table(tiny_dataset.shard_for_day(day)), dt.date.fromisoformat(day))
        load_table(client, f"{emulator.project}.{DATASET}.clicks_without_click", clicks.drop_columns(["click"]), "day")
        load_table(client, f"{emulator.project}.{DATASET}.clicks_with_text_click",
                   clicks.set_column(2, "click", pa.array([str(v) for v in clicks["click"].to_pylist()])), "day")
        load_table(client, f"{emulator.project}.{DATASET}.clicks_unpartitioned", clicks)
        yield emulator
