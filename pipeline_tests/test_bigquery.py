"""The BigQuery source against a real BigQuery API endpoint on loopback (local-bigquery 0.3.2, started
by a fixture from .venv-bigquery; ``make bigquery-emulator`` builds it, ``make test`` first)."""

import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from devtools.bigquery_emulator import bigquery_emulator, load_reference_dataset, load_table, touch_table, with_day
from devtools.delayed_link import delayed_link
from devtools.fault_proxy import fault_proxy
from devtools.redis_server import free_port
from pipeline.data.bigquery import BigQuerySettings, BigQuerySource, CostCapExceeded
from pipeline.data.clicks import iter_chunks, read_manifest
from pipeline.data.features import RESTAURANTS, USERS, load_snapshot
from pipeline.data.schema import CLICKS, SchemaError
from pipeline.data.sources import SourceConfigError, TransientSourceError
from pipeline.defs.assets.clicks import processed_clicks, raw_clicks
from pipeline.defs.assets.features import restaurant_features, user_features
from pipeline.defs.resources import (
    BigQuerySourceResource,
    LocalParquetSourceResource,
    WarehouseResource,
    source_from_settings,
)
from pipeline.defs.sensors import feature_source_sensor
from pipeline.publish import Artifact
from pipeline.settings import SettingsError, load_settings
from pipeline_tests.conftest import step_failures
from pipeline_tests.test_cli_e2e import _run as _cli

DATASET = "pipeline"
ALL = [user_features, restaurant_features, raw_clicks, processed_clicks]
DAY, EMPTY_DAY = "2026-01-02", "2026-01-05"  # the tiny dataset holds 2026-01-01 … 2026-01-03


@pytest.fixture(scope="module")
def emulator(tiny_dataset):
    """The emulator with the tiny dataset loaded (clicks partitioned by day) and a few broken tables."""
    with bigquery_emulator() as emulator:
        client = emulator.client()
        load_reference_dataset(client, DATASET, tiny_dataset.root, "2026-01-01")
        clicks = with_day(pq.read_table(tiny_dataset.shard_for_day(DAY)), dt.date.fromisoformat(DAY))
        load_table(client, f"{emulator.project}.{DATASET}.clicks_without_click", clicks.drop_columns(["click"]), "day")
        load_table(client, f"{emulator.project}.{DATASET}.clicks_with_text_click",
              clicks.set_column(2, "click", pa.array([str(v) for v in clicks["click"].to_pylist()])), "day")
        load_table(client, f"{emulator.project}.{DATASET}.clicks_unpartitioned", clicks)
        yield emulator


def _bigquery(emulator, **settings) -> BigQuerySourceResource:
    return BigQuerySourceResource(**{"project": emulator.project, "dataset": DATASET, "endpoint": emulator.endpoint,
                                     "storage_endpoint": emulator.storage_endpoint, **settings})


def _source(emulator, **settings) -> BigQuerySource:
    return _bigquery(emulator, **settings).open()


def _materialize(assets, source, warehouse: Path, partition=DAY, run_config=None, instance=None):
    return dg.materialize(assets, partition_key=partition, raise_on_error=False, run_config=run_config,
                          instance=instance, resources={"source": source,
                                                        "warehouse": WarehouseResource(root=str(warehouse))})


def _raw_metadata(result) -> dict:
    [event] = [m for m in result.get_asset_materialization_events() if m.asset_key == dg.AssetKey("raw_clicks")]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _retried(result) -> bool:
    return any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)


@pytest.mark.slow
@pytest.mark.parametrize("read_api", ["storage", "rest"])
def test_bigquery_source_gives_the_local_paths_snapshots_and_partitions_row_for_row(
        emulator, tiny_dataset, tmp_path, read_api):
    local = _materialize(ALL, LocalParquetSourceResource(dataset_dir=str(tiny_dataset.root), start_date="2026-01-01"),
                         tmp_path / "local")
    ours = _materialize(ALL, _bigquery(emulator, read_api=read_api, page_rows=1000), tmp_path / "bigquery")
    assert local.success and ours.success, step_failures(ours)
    for kind in (USERS, RESTAURANTS):
        a, b = (load_snapshot(tmp_path / root / "features" / kind.name, kind) for root in ("bigquery", "local"))
        assert a.version == b.version and np.array_equal(a.ids, b.ids) and np.array_equal(a.values, b.values)
    partitions = [tmp_path / root / "processed_clicks" / f"date={DAY}" for root in ("bigquery", "local")]
    chunks = [list(iter_chunks(p)) for p in partitions]
    assert len(chunks[0]) == len(chunks[1]) > 0
    for ours_chunk, local_chunk in zip(*chunks, strict=True):
        assert all(np.array_equal(x, y) for x, y in zip(ours_chunk, local_chunk, strict=True))
    manifests = [read_manifest(p) for p in partitions]
    assert manifests[0]["rows"] == manifests[1]["rows"] and manifests[0]["dropped"] == manifests[1]["dropped"]
    metadata = _raw_metadata(ours)
    assert metadata["extracted"] == 1
    assert metadata["rows"] == pq.ParquetFile(tiny_dataset.shard_for_day(DAY)).metadata.num_rows
    assert metadata["bigquery_method"] == ("storage_read" if read_api == "storage" else "query")
    assert metadata["bigquery_read_api"] == read_api
    assert metadata["bigquery_pages"] >= (1 if read_api == "storage" else 4)
    if read_api == "storage":  # the read session's estimate: 3 INT64 columns of the day's rows, and nothing billed
        assert metadata["bigquery_storage_bytes_scanned"] == 24 * metadata["rows"]
        assert metadata["bigquery_bytes_billed"] == 0
    else:  # the emulator reports 0 bytes for every query: the run says it does not know
        assert metadata["bigquery_bytes_processed"] == metadata["bigquery_dry_run_bytes"] == 0
        assert "0 bytes processed and billed: unknown, not free" in metadata["bigquery_cost_note"]


def test_test_files_and_requests_come_from_their_tables(emulator, tiny_dataset, tmp_path):
    for read_api in ("storage", "rest"):
        source = _source(emulator, read_api=read_api)
        [test_file] = source.test_files(tmp_path)
        expected = pa.concat_tables(pq.read_table(p) for p in tiny_dataset.test_files())
        assert pq.read_table(test_file).select(CLICKS.column_names).equals(expected.select(CLICKS.column_names))
        requests = pq.read_table(source.requests_file(tmp_path))
        assert requests.to_pylist() == pq.read_table(tiny_dataset.requests).to_pylist()


def test_a_day_without_rows_fails_clearly_and_publishes_nothing(emulator, tmp_path):
    assert _source(emulator).has_day(DAY) and not _source(emulator).has_day(EMPTY_DAY)
    assert _source(emulator, read_api="rest").has_day(DAY) and not _source(emulator, read_api="rest").has_day(EMPTY_DAY)
    result = _materialize([raw_clicks], _bigquery(emulator), tmp_path, partition=EMPTY_DAY)
    assert not result.success and not _retried(result)
    assert f"pipeline.clicks has no rows for {EMPTY_DAY}" in step_failures(result)
    assert not (tmp_path / "raw_clicks" / f"date={EMPTY_DAY}").exists()


def test_a_published_day_is_not_queried_again_unless_reextraction_is_asked(emulator, tmp_path):
    first = _materialize([raw_clicks], _bigquery(emulator), tmp_path)
    assert first.success and _raw_metadata(first)["extracted"] == 1
    live = Artifact(tmp_path / "raw_clicks" / f"date={DAY}").live_version()
    # Nothing listens at this endpoint: any request would fail the run.
    dead = BigQuerySourceResource(project=emulator.project, dataset=DATASET, endpoint=f"http://127.0.0.1:{free_port()}",
                                  storage_endpoint=f"127.0.0.1:{free_port()}", timeout_s="2")
    again = _materialize([raw_clicks], dead, tmp_path)
    assert again.success, step_failures(again)
    assert _raw_metadata(again)["extracted"] == 0 and _raw_metadata(again)["version"] == live
    forced = _materialize([raw_clicks], _bigquery(emulator), tmp_path,
                          run_config={"ops": {"raw_clicks": {"config": {"reextract": True}}}})
    assert forced.success and _raw_metadata(forced)["extracted"] == 1 and _raw_metadata(forced)["version"] != live


def test_an_extract_that_fails_midway_leaves_the_previous_version_live(emulator, tmp_path):
    assert _materialize([raw_clicks], _bigquery(emulator), tmp_path).success
    artifact = Artifact(tmp_path / "raw_clicks" / f"date={DAY}")
    live = artifact.live_version()

    def second_page_refused(method, path):  # the query ran; its second page of results is refused
        return 400 if "pageToken" in path else None

    with fault_proxy(emulator.endpoint, second_page_refused) as proxy:
        result = _materialize([raw_clicks], _bigquery(emulator, endpoint=proxy.url, read_api="rest", page_rows=1000),
                              tmp_path, run_config={"ops": {"raw_clicks": {"config": {"reextract": True}}}})
    assert not result.success and not _retried(result)
    assert "injected by the fault proxy" in step_failures(result)
    assert artifact.live_version() == live and artifact.versions() == [live]
    assert not list(artifact.versions_dir.glob(".staging-*"))


def test_feature_version_follows_the_tables_and_the_sensor_refreshes_on_a_new_one(emulator):
    source = _bigquery(emulator)
    version = source.feature_version()
    assert source.feature_version() == version  # stable while the tables are
    with dg.instance_for_test() as instance:
        tick = feature_source_sensor(dg.build_sensor_context(instance=instance, resources={"source": source}))
        assert [r.run_key for r in tick.run_requests] == [f"features-{version}"]
        touch_table(emulator.client(), f"{emulator.project}.{DATASET}.restaurant_features")
        newer = source.feature_version()
        assert newer != version
        tick = feature_source_sensor(dg.build_sensor_context(cursor=version, instance=instance,
                                                             resources={"source": source}))
        assert [r.run_key for r in tick.run_requests] == [f"features-{newer}"]
        skipped = feature_source_sensor(dg.build_sensor_context(cursor=newer, instance=instance,
                                                                resources={"source": source}))
        assert isinstance(skipped, dg.SkipReason)


def test_settings_errors_name_the_setting(emulator, tmp_path, monkeypatch):
    with pytest.raises(SourceConfigError, match="PIPELINE_BIGQUERY_PROJECT"):
        BigQuerySourceResource(dataset=DATASET).open()
    with pytest.raises(SourceConfigError, match="PIPELINE_BIGQUERY_DATASET"):
        BigQuerySourceResource(project=emulator.project).open()
    with pytest.raises(SourceConfigError, match="clicks_table='clicks; DROP TABLE x'"):
        _source(emulator, clicks_table="clicks; DROP TABLE x")
    with pytest.raises(SourceConfigError, match="PIPELINE_BIGQUERY_MAX_BYTES_BILLED"):
        _source(emulator, maximum_bytes_billed="a lot")
    # No endpoint (Google's), no key file, no application-default credentials anywhere.
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG", "GOOGLE_CLOUD_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NO_GCE_CHECK", "true")  # google-auth: do not probe a metadata server
    google = BigQuerySource(BigQuerySettings(project="some-project", dataset=DATASET))
    with pytest.raises(SourceConfigError, match="set GOOGLE_APPLICATION_CREDENTIALS"):
        google.feature_version()
    with pytest.raises(SourceConfigError, match="GOOGLE_APPLICATION_CREDENTIALS=.*no such key file"):
        BigQuerySource(BigQuerySettings(project="some-project", dataset=DATASET,
                                        credentials_file=str(tmp_path / "key.json"))).feature_version()


def test_missing_dataset_table_and_column_errors_name_them(emulator, tmp_path):
    with pytest.raises(FileNotFoundError, match="BigQuery dataset test-project.nowhere not found"):
        _source(emulator, dataset="nowhere").extract_clicks(DAY, tmp_path)
    with pytest.raises(FileNotFoundError, match="Table test-project:pipeline.nothing"):
        _source(emulator, users_table="nothing").feature_version()
    with pytest.raises(SchemaError, match="clicks_without_click: missing column 'click'"):
        _source(emulator, clicks_table="clicks_without_click").extract_clicks(DAY, tmp_path)
    with pytest.raises(SchemaError, match="clicks_with_text_click: column 'click' has type string, expected integer"):
        _source(emulator, clicks_table="clicks_with_text_click").extract_clicks(DAY, tmp_path)
    with pytest.raises(ValueError, match="clicks_unpartitioned must be partitioned by DAY on 'day'"):
        _source(emulator, clicks_table="clicks_unpartitioned").extract_clicks(DAY, tmp_path)
    with pytest.raises(CostCapExceeded, match="over maximum_bytes_billed=1,000"):
        _source(emulator, maximum_bytes_billed="1000").extract_clicks(DAY, tmp_path)
    assert not list(tmp_path.iterdir())  # the cap is checked before anything is read
    # Through the asset: the message reaches the run, and a 4xx-like error is not retried.
    result = _materialize([raw_clicks], _bigquery(emulator, clicks_table="missing_clicks"), tmp_path / "w")
    assert not result.success and not _retried(result)
    assert "BigQuery table test-project.pipeline.missing_clicks not found" in step_failures(result)


def test_client_retries_transient_errors_and_never_a_4xx(emulator):
    table_path = "/tables/user_features"  # get_table of user_features
    failures = {"left": 2}

    def twice_unavailable(method, path):
        if table_path in path and failures["left"]:
            failures["left"] -= 1
            return 503
        return None

    with fault_proxy(emulator.endpoint, twice_unavailable) as proxy:
        assert _source(emulator, endpoint=proxy.url, read_api="rest").table("user_features").num_rows > 0
        assert [status for _, path, status in proxy.seen if table_path in path] == [503, 503, 200]
    with fault_proxy(emulator.endpoint, lambda method, path: 400 if table_path in path else None) as proxy:
        with pytest.raises(ValueError, match="injected by the fault proxy"):
            _source(emulator, endpoint=proxy.url, read_api="rest").table("user_features")
        assert [status for _, path, status in proxy.seen if table_path in path] == [400]
    with fault_proxy(emulator.endpoint, lambda method, path: 503) as proxy:
        with pytest.raises(TransientSourceError):
            _source(emulator, endpoint=proxy.url, read_api="rest", timeout_s="1").table("user_features")
        assert len(proxy.seen) > 1


@pytest.mark.slow
def test_the_step_retries_a_source_that_stays_unavailable_past_the_clients_retries(emulator, tmp_path):
    unavailable = threading.Event()
    unavailable.set()
    with fault_proxy(emulator.endpoint, lambda method, path: 503 if unavailable.is_set() else None) as proxy:
        threading.Timer(5.0, unavailable.clear).start()  # after the first attempt gave up (3 s)
        result = _materialize([raw_clicks], _bigquery(emulator, endpoint=proxy.url, read_api="rest", timeout_s="1"),
                              tmp_path)
    assert result.success, step_failures(result)
    assert _retried(result) and _raw_metadata(result)["extracted"] == 1


MEMORY_DAYS = ("2026-01-01", "2026-01-02", "2026-01-03")  # a warm-up day, then a few pages and many


@pytest.fixture(scope="module")
def memory_emulator():
    """An emulator and ``load(page, pages)``: a dataset (loaded on the first ask for it) whose clicks hold
    1,000 rows on the warm-up day, then ``pages[0]`` and ``pages[1]`` pages of ``page`` rows; its name and
    rows by day."""
    rng = np.random.default_rng(0)
    with bigquery_emulator() as emulator:
        client, loaded = emulator.client(), {}

        def load(page: int, pages: tuple[int, int]) -> tuple[str, dict[str, int]]:
            if (page, pages) not in loaded:
                dataset = f"memory_{len(loaded)}"
                client.create_dataset(dataset)
                days = dict(zip(MEMORY_DAYS, (1_000, pages[0] * page, pages[1] * page), strict=True))
                for n, (day, rows) in enumerate(days.items()):
                    load_table(client, f"{emulator.project}.{dataset}.clicks", with_day(pa.table({
                        "user_id": rng.integers(0, 10**6, rows), "restaurant_id": rng.integers(0, 10**5, rows),
                        "click": rng.integers(0, 2, rows)}), dt.date.fromisoformat(day)), "day", append=n > 0)
                loaded[page, pages] = dataset, days
            return loaded[page, pages]

        yield emulator, load


@pytest.mark.slow
@pytest.mark.parametrize("read_api, page_rows, pages, link_delay_s", [
    ("rest", 2_000, (2, 20), 0.0), ("storage", 20_000, (4, 16), 0.0),
    # The server's bytes 50 ms late, as over a long link or from a server slowed by a busy machine:
    # the stream must not run further ahead of the extract for it.
    ("storage", 20_000, (4, 16), 0.05)])
def test_extract_memory_does_not_grow_with_the_table(memory_emulator, read_api, page_rows, pages, link_delay_s):
    """Peak RSS growth of an extract in a fresh process, for a day of a few pages and one of at least 10
    pages. A REST page is ``page_rows``; a Storage page is the server's message (the emulator's: 1M rows)."""
    emulator, load = memory_emulator
    page = page_rows if read_api == "rest" else 1_000_000
    dataset, days = load(page, pages)
    growth = {}
    link = delayed_link(emulator.storage_endpoint, link_delay_s) if link_delay_s else contextlib.nullcontext(
        emulator.storage_endpoint)
    with link as storage_endpoint:
        for day in MEMORY_DAYS[1:]:
            out = subprocess.run([sys.executable, "-m", "devtools.extract_peak_rss", emulator.endpoint,
                                  storage_endpoint, emulator.project, dataset, read_api, "auto",
                                  str(page_rows), MEMORY_DAYS[0], day], capture_output=True, text=True, timeout=600,
                                 cwd=Path(__file__).parents[1])
            assert out.returncode == 0, out.stderr[-3000:]
            report = json.loads(out.stdout.splitlines()[-1])
            assert report["rows"] == days[day] and report["bigquery_pages"] >= days[day] // page
            growth[day] = report["peak_growth_mb"]
    small, large = growth[MEMORY_DAYS[1]], growth[MEMORY_DAYS[2]]
    assert large <= 1.3 * small + 20, growth  # 4× or 10× the rows, about the same memory


@pytest.mark.slow
def test_pointing_the_pipeline_at_bigquery_is_configuration(emulator, tmp_path):
    """dg check defs and dg launch, with nothing but environment variables choosing BigQuery."""
    env = {**os.environ, **emulator.settings(DATASET), "DAGSTER_HOME": str(tmp_path / "home"),
           "PIPELINE_WAREHOUSE_DIR": str(tmp_path / "warehouse"), "PIPELINE_DATASET_DIR": str(tmp_path / "none"),
           "PIPELINE_END_DATE": "2026-01-03"}
    (tmp_path / "home").mkdir()
    assert "All definitions loaded successfully" in _cli("dg", "check", "defs", env=env)
    _cli("dg", "launch", "--job", "feature_snapshots", env=env)
    _cli("dg", "launch", "--job", "ingest_clicks", "--partition-range", "2026-01-01...2026-01-03", env=env)
    for day in ("2026-01-01", "2026-01-02", "2026-01-03"):
        record = Artifact(tmp_path / "warehouse" / "raw_clicks" / f"date={day}").current().record
        assert record["origin"] == f"bigquery://{emulator.project}.{DATASET}.clicks/day={day}"
        assert read_manifest(tmp_path / "warehouse" / "processed_clicks" / f"date={day}")["rows"] > 0
    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("user_features"))
        assert event.asset_materialization.metadata["source_version"].value == _bigquery(emulator).feature_version()


def test_source_is_chosen_by_pipeline_source(monkeypatch):
    monkeypatch.setenv("PIPELINE_SOURCE", "bigquery")
    monkeypatch.setenv("PIPELINE_BIGQUERY_PROJECT", "my-project")
    chosen = source_from_settings(load_settings())
    assert isinstance(chosen, BigQuerySourceResource)
    assert isinstance(chosen.project, dg.EnvVar) and chosen.project.get_value() == "my-project"
    monkeypatch.setenv("PIPELINE_SOURCE", "local")
    assert isinstance(source_from_settings(load_settings()), LocalParquetSourceResource)
    monkeypatch.setenv("PIPELINE_SOURCE", "s3")
    with pytest.raises(SettingsError, match="PIPELINE_SOURCE: expected one of local, bigquery, got 's3'"):
        load_settings()
