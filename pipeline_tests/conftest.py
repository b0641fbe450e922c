"""Shared fixtures: a tiny generated dataset and helpers to write hand-made click files."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import runtime
from pipeline.data.generate import PRESETS, generate
from pipeline.data.layout import ReferenceDataset
from pipeline.model.reproducible import enable_reproducible_blas
from pipeline.serving.telemetry import disable_onnxruntime_telemetry
from pipeline.settings import load_settings

# Scripts the tests start as processes import devtools/ (not installed) like the tests do.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH")]))
# Tests use days of January 2026 whatever dataset (if any) data/dataset holds: partitions to yesterday.
os.environ.setdefault("PIPELINE_END_DATE", "open")
# Training's native kernels must build here (gcc is part of the machine): no test silently takes the torch path,
# in the processes the tests start (their entry points read the variable) and in this one.
os.environ.setdefault("PIPELINE_NATIVE_KERNELS", "required")
# As the pipeline's entry points do: the same bits on any thread count, set before the first matrix product.
enable_reproducible_blas()
disable_onnxruntime_telemetry()  # as the entry points do, for this process and those it starts
runtime.configure(load_settings())

START = dt.date(2026, 1, 1)
TINY = dataclasses.replace(PRESETS["tiny"], train_files=3, test_files=1, rows_per_file=4_000,
                           requests=50)


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
    import shutil

    root = tmp_path / "dataset"
    for src in tiny_dataset.root.rglob("*.parquet"):
        dst = root / src.relative_to(tiny_dataset.root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    return ReferenceDataset(root, START)


def write_clicks(path: Path, columns: dict, schema: pa.Schema | None = None) -> Path:
    """Write a click parquet file from column lists (None entries become nulls)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table(columns, schema=schema) if schema else pa.table(columns)
    if path.exists():
        path.unlink()  # never write through a hard link into the shared dataset
    pq.write_table(table, path)
    return path


def step_failures(result) -> str:
    """Every failed step's error messages, causes included, of a Dagster execution result."""
    messages = []
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            error = event.event_specific_data.error
            while error is not None:
                messages.append(error.message)
                error = error.cause
    return "\n".join(messages)


def build_warehouse(dataset: ReferenceDataset, root: Path, chunk_rows: int, days: int | None = None):
    """Feature snapshots and processed partitions of ``dataset`` under ``root``, built with the
    same functions the assets use."""
    from devtools.warehouse_build import build_from_reference
    from pipeline.data.layout import Warehouse

    warehouse = Warehouse(root)
    build_from_reference(dataset, warehouse, chunk_rows, days)
    return warehouse



@pytest.fixture(scope="session")
def redis_url():
    """A real redis-server (Debian package) on a free loopback port, stopped after the session."""
    import os
    import shutil

    from devtools.redis_server import local_redis_server

    if shutil.which("redis-server") is None:
        message = "redis-server is not installed (apt-get install -y redis-server; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with local_redis_server() as url:
        yield url

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


def copy_artifact(source: Path, target: Path) -> None:
    """Copy a published artifact (its versions and its pointer) to another place."""
    import shutil

    from pipeline.publish import Artifact

    src, dst = Artifact(source), Artifact(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src.versions_dir, dst.versions_dir, symlinks=True)
    os.symlink(os.readlink(source), target)


@pytest.fixture
def redis_process(tmp_path):
    """A redis-server of the test's own (no password), stopped after it."""
    from devtools.redis_server import RedisServer

    server = RedisServer(str(tmp_path)).start()
    yield server
    server.stop()


@pytest.fixture
def redis_api(serving_artifacts, redis_process, tmp_path):
    """A served copy of the tiny artifacts with features in a Redis of its own; (api, redis, warehouse)."""
    from pipeline.store.redis_store import RedisStore
    from pipeline_tests.api_process import ApiProcess, copy_warehouse, load_features

    source, tables, _, _ = serving_artifacts
    warehouse = copy_warehouse(source, tmp_path / "warehouse")
    store = RedisStore(redis_process.url)
    load_features(store, tables)
    store.close()
    api = ApiProcess(tmp_path, {"PIPELINE_WAREHOUSE_DIR": str(warehouse.root), "REDIS_URL": redis_process.url,
                                "PIPELINE_ONLINE_STORE": "redis"})
    api.wait_until(ready=True)
    yield api, redis_process, warehouse
    api.stop()
