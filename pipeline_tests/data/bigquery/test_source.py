"""The BigQuery source against a real BigQuery API endpoint on loopback (local-bigquery 0.3.2, started
by the ``emulator`` fixture from .venv-bigquery; ``make bigquery-emulator`` builds it, ``make test`` first)."""

import threading
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.data.bigquery import BigQuerySettings, BigQuerySource, CostCapExceeded
from pipeline.data.features import RESTAURANTS, USERS, load_snapshot
from pipeline.data.processed_partition import iter_chunks, read_manifest
from pipeline.data.schema import CLICKS, SchemaError
from pipeline.data.sources import SourceConfigError, TransientSourceError
from pipeline.defs.assets.clicks import processed_clicks, raw_clicks
from pipeline.defs.assets.features import restaurant_features, user_features
from pipeline.defs.resources import BigQuerySourceResource, LocalParquetSourceResource, WarehouseResource
from pipeline.defs.sensors import feature_source_sensor
from pipeline.publish import Artifact
from pipeline_devtools.bigquery_emulator import DATASET, touch_table
from pipeline_devtools.dagster_runs import step_failures
from pipeline_devtools.fault_proxy import fault_proxy
from pipeline_devtools.redis_server import free_port

ALL = [user_features, restaurant_features, raw_clicks, processed_clicks]
DAY, EMPTY_DAY = "2026-01-02", "2026-01-05"  # the tiny dataset holds 2026-01-01 … 2026-01-03


def _bigquery(emulator, **settings) -> BigQuerySourceResource:
    return emulator.source_resource(**{"dataset": DATASET, **settings})


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


def test_click_events_come_from_their_table_one_day_at_a_time(emulator, tmp_path):
    import datetime as dt

    from pipeline.feedback import click_events
    from pipeline_devtools.bigquery_emulator import load_table, with_day

    noon = int(dt.datetime(2026, 1, 2, 12, tzinfo=dt.UTC).timestamp() * 1e6)
    days = {"2026-01-02": click_events.table(["r-1", "r-2"], [5, 6], [noon, noon + 1], [True, False]),
            "2026-01-03": click_events.table(["r-3"], [7], [noon + 86_400_000_000])}
    loaded = pa.concat_tables(with_day(t, dt.date.fromisoformat(d)) for d, t in days.items())
    load_table(emulator.client(), f"{emulator.project}.{DATASET}.click_events", loaded, partition_column="day")
    for read_api in ("storage", "rest"):
        source = _source(emulator, read_api=read_api)
        [path] = source.click_event_files("2026-01-02", tmp_path)
        assert click_events.read(path).to_pylist() == days["2026-01-02"].to_pylist()
        assert source.click_events_version("2026-01-02") is None  # telling would be billed
    with pytest.raises(FileNotFoundError, match="no_such_table"):
        _source(emulator, click_events_table="no_such_table").click_event_files("2026-01-02", tmp_path)
