"""The Kubernetes deployment files agree with the code and with each other, and the definitions load
with the k8s executor (no cluster here: what can be checked without one)."""

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from pipeline.defs.jobs import LOCATION_NAME
from pipeline.settings import all_specs

ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent


SECRET = "pipeline-secrets"  # created out of band (deploy/k8s/pipeline.yaml's header)
# a key whose string value would be a credential; names of Secrets (postgresqlSecretName, envSecrets) are not
_CREDENTIAL_KEY = re.compile(r"(?i)(password|passwd|pwd|token|api_?key|private_?key|credentials?)$")
_URL_PASSWORD = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/?#@\s]*:([^/?#\s@]+)@")
_VARIABLE = re.compile(r"^\$(?:\{[A-Za-z_]\w*\}|[A-Za-z_]\w*)$")  # $NAME, ${NAME}: filled in out of band


def _documented_secret_keys(name: str) -> list[str]:
    """The keys the documented ``kubectl create secret generic NAME`` command gives the Secret."""
    text = (ROOT / "deploy/k8s/pipeline.yaml").read_text()
    command = re.search(rf"create secret generic {name}((?:[^\n]*\\\n)*[^\n]*)", text)
    assert command, f"deploy/k8s/pipeline.yaml does not say how to create the Secret {name}"
    return re.findall(r"--from-literal=([A-Za-z_][\w.-]*)=", command.group(1))


def committed_credentials(path: Path) -> list[str]:
    """Every password-like value committed in a deployment file: a URL with a password that is not a
    $VARIABLE, a string under a credential-named key, a Secret manifest with data."""
    text = path.read_text()
    found = [f"{path.name}: URL password {m.group(1)!r}" for m in _URL_PASSWORD.finditer(text)
             if not _VARIABLE.match(m.group(1))]

    def walk(value, where: str) -> None:
        if isinstance(value, dict):
            if value.get("kind") == "Secret" and (value.get("data") or value.get("stringData")):
                found.append(f"{path.name}: Secret {value.get('metadata', {}).get('name')} holds values")
            for key, item in value.items():
                if isinstance(item, str | int) and not isinstance(item, bool) and _CREDENTIAL_KEY.search(str(key)) \
                        and str(item).strip():
                    found.append(f"{path.name}: {where}{key} = {item!r}")
                walk(item, f"{where}{key}.")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{where}{index}.")

    if path.suffix in (".yaml", ".yml"):
        for document in yaml.safe_load_all(text):
            walk(document, "")
    return found


def test_no_deployment_file_commits_a_password():
    files = [p for p in (ROOT / "deploy").rglob("*") if p.is_file()]
    assert any(p.name == "pipeline.yaml" for p in files) and any(p.name == "values.yaml" for p in files)
    assert [c for p in files for c in committed_credentials(p)] == []
    values = yaml.safe_load((ROOT / "deploy/helm/values.yaml").read_text())
    # the chart would otherwise make Dagster's Postgres password from its own default value
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"] == values["postgresql"]["existingSecret"]
    assert _documented_secret_keys(values["global"]["postgresqlSecretName"]) == ["postgresql-password"]
    assert "REDIS_URL" in _documented_secret_keys(SECRET)


def test_the_credential_check_finds_committed_passwords(tmp_path):
    leaked = tmp_path / "leaked.yaml"
    leaked.write_text("kind: Secret\nmetadata: {name: s}\nstringData:\n  REDIS_URL: redis://:change-me@redis:6379/0\n"
                      "---\npostgresql:\n  postgresqlPassword: test\n  existingSecret: name-only\n"
                      "---\nenv:\n  API_TOKEN: abc\n  URL: redis://u:$REDIS_PASSWORD@h/0\n")
    assert committed_credentials(leaked) == [
        "leaked.yaml: URL password 'change-me'", "leaked.yaml: Secret s holds values",
        "leaked.yaml: postgresql.postgresqlPassword = 'test'", "leaked.yaml: env.API_TOKEN = 'abc'"]


def _manifests() -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all((ROOT / "deploy/k8s/pipeline.yaml").read_text()) if doc}


def test_dg_check_defs_loads_with_the_k8s_executor(tmp_path):
    env = {**os.environ, "PIPELINE_EXECUTOR": "k8s", "DAGSTER_HOME": str(tmp_path),
           "VIRTUAL_ENV": str(BIN.parent), "PATH": f"{BIN}:{os.environ['PATH']}"}
    done = subprocess.run([str(BIN / "dg"), "check", "defs"], env=env, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "All definitions loaded successfully" in done.stdout + done.stderr


def test_the_helm_values_run_this_code_location_with_the_shared_warehouse_claim():
    values = yaml.safe_load((ROOT / "deploy/helm/values.yaml").read_text())
    manifests = _manifests()
    settings = manifests["ConfigMap"]["data"]
    [deployment] = values["dagster-user-deployments"]["deployments"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dagster"]
    assert deployment["name"] == LOCATION_NAME
    assert deployment["dagsterApiGrpcArgs"] == ["-m", project["module_name"]]
    assert [m["name"] for m in deployment["envConfigMaps"]] == [manifests["ConfigMap"]["metadata"]["name"]]
    assert [s["name"] for s in deployment["envSecrets"]] == [SECRET]
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
    variables = {spec.variable for _, spec in all_specs()}
    assert set(settings) - thread_variables <= variables
    assert set(_documented_secret_keys(SECRET)) <= variables
    # the same instance settings as deploy/dagster.yaml: one step at a time per pool
    instance = yaml.safe_load((ROOT / "deploy/dagster.yaml").read_text())
    assert values["concurrency"]["pools"]["defaultLimit"] == instance["concurrency"]["pools"]["default_limit"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher" and values["postgresql"]["enabled"]
