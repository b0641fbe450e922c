"""The resources built from the settings: PIPELINE_SOURCE chooses the source."""

import dagster as dg
import pytest

from pipeline.defs.resources import BigQuerySourceResource, LocalParquetSourceResource, source_from_settings
from pipeline.settings import SettingsError, load_settings


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
