"""The executor is chosen and configured by the settings (multiprocess, in_process, celery, k8s)."""

import dagster as dg
import pytest

from pipeline.defs.executor import executor_from_settings, k8s_config
from pipeline.settings import SettingsError, load_settings


def test_executor_is_chosen_by_configuration(monkeypatch):
    monkeypatch.setenv("PIPELINE_EXECUTOR", "in_process")
    assert executor_from_settings(load_settings()) is dg.in_process_executor
    monkeypatch.setenv("PIPELINE_EXECUTOR", "multiprocess")
    monkeypatch.setenv("PIPELINE_MAX_CONCURRENT", "3")
    assert executor_from_settings(load_settings()).name == "multiprocess"
    for kind in ("celery", "k8s"):  # the extras are in the lock (e2e/test_celery.py, e2e/test_deploy.py run them)
        monkeypatch.setenv("PIPELINE_EXECUTOR", kind)
        assert executor_from_settings(load_settings()).name == kind
    from pipeline.defs.executor import _import_optional

    with pytest.raises(ImportError, match=r"needs the project's 'celery' extra \(pip install -e '\.\[celery\]'"):
        _import_optional("dagster_celery_missing", "celery_executor", "celery")
    monkeypatch.setenv("PIPELINE_EXECUTOR", "threads")
    with pytest.raises(SettingsError, match="PIPELINE_EXECUTOR: expected one of multiprocess, in_process, celery, "
                                            "k8s, got 'threads'"):
        load_settings()


def test_the_k8s_executor_is_configured_from_the_settings(monkeypatch):
    monkeypatch.setenv("PIPELINE_EXECUTOR", "k8s")
    monkeypatch.setenv("PIPELINE_MAX_CONCURRENT", "6")
    settings = load_settings()
    assert executor_from_settings(settings).name == "k8s"
    assert k8s_config(settings.dagster.max_concurrent)["max_concurrent"] == 6
