"""The Kubernetes deployment files agree with the code and with each other, and the definitions load
with the k8s executor (no cluster here: what can be checked without one)."""

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from pipeline.config import DEFAULTS
from pipeline.defs.jobs import LOCATION_NAME

ROOT = Path(__file__).parents[1]
BIN = Path(sys.executable).parent


def _manifests() -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all((ROOT / "deploy/k8s/pipeline.yaml").read_text()) if doc}


def test_dg_check_defs_loads_with_the_k8s_executor(tmp_path):
    env = {**os.environ, "PIPELINE_EXECUTOR": "k8s", "DAGSTER_HOME": str(tmp_path),
           "VIRTUAL_ENV": str(BIN.parent), "PATH": f"{BIN}:{os.environ['PATH']}"}
    done = subprocess.run([str(BIN / "dg"), "check", "defs"], env=env, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "All definitions loaded successfully" in done.stdout + done.stderr


def test_the_k8s_executor_is_configured_from_the_settings(monkeypatch):
    from pipeline.defs.executor import executor_from_settings, k8s_config

    monkeypatch.setenv("PIPELINE_EXECUTOR", "k8s")
    monkeypatch.setenv("PIPELINE_MAX_CONCURRENT", "6")
    assert executor_from_settings().name == "k8s"
    assert k8s_config()["max_concurrent"] == 6


def test_the_helm_values_run_this_code_location_with_the_shared_warehouse_claim():
    values = yaml.safe_load((ROOT / "deploy/helm/values.yaml").read_text())
    manifests = _manifests()
    settings = manifests["ConfigMap"]["data"]
    [deployment] = values["dagster-user-deployments"]["deployments"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dagster"]
    assert deployment["name"] == LOCATION_NAME
    assert deployment["dagsterApiGrpcArgs"] == ["-m", project["module_name"]]
    assert [m["name"] for m in deployment["envConfigMaps"]] == [manifests["ConfigMap"]["metadata"]["name"]]
    assert [s["name"] for s in deployment["envSecrets"]] == [manifests["Secret"]["metadata"]["name"]]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"]  # runs and steps get the volume and settings
    [volume] = deployment["volumes"]
    [mount] = deployment["volumeMounts"]
    assert volume["persistentVolumeClaim"]["claimName"] == manifests["PersistentVolumeClaim"]["metadata"]["name"]
    assert manifests["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]
    assert mount["name"] == volume["name"]
    assert Path(settings["PIPELINE_WAREHOUSE_DIR"]).is_relative_to(mount["mountPath"])
    assert settings["PIPELINE_EXECUTOR"] == "k8s"
    # every setting the deployment sets is one the pipeline reads (a typo would be silently ignored)
    thread_variables = {"OMP_NUM_THREADS", "POLARS_MAX_THREADS"}
    assert set(settings) - thread_variables <= set(DEFAULTS)
    assert set(manifests["Secret"]["stringData"]) <= set(DEFAULTS)
    # the same instance settings as deploy/dagster.yaml: one step at a time per pool
    instance = yaml.safe_load((ROOT / "deploy/dagster.yaml").read_text())
    assert values["concurrency"]["pools"]["defaultLimit"] == instance["concurrency"]["pools"]["default_limit"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher" and values["postgresql"]["enabled"]
