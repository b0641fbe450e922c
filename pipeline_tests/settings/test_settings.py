"""The settings tree: each setting defined once, parsed at the entry points with errors naming the
variable, and read nowhere below the entry points."""

import ast
from pathlib import Path

import pytest

from pipeline.settings import Settings, SettingsError, all_specs, load_settings

ROOT = Path(__file__).parents[2]
# The modules that may read the environment: the settings' definition and the entry points. Each says why.
ENTRY_POINTS = {
    "pipeline/settings/__init__.py": "load_settings: the one parse of the environment",
    "pipeline/defs/settings.py": "the code location's parse; EnvVar where a resource is built",
    "pipeline/api/server.py": "the API's factory and serve(); PROMETHEUS_MULTIPROC_DIR for the workers",
    "pipeline/definitions.py": "the code location's module",
    "pipeline/cli.py": "the command line",
    "pipeline/worker.py": "the Celery worker (DAGSTER_HOME; the executor's env sources)",
    "pipeline/api/metrics.py": "prometheus-client's own PROMETHEUS_MULTIPROC_DIR, set by serve()",
    "pipeline/model/reproducible.py": "MKL_CBWR for MKL itself, set once by the entry points before the first product",
    "pipeline/serving/telemetry.py": "ORT_DISABLE_TELEMETRY for ONNX Runtime itself, set by the entry points",
}
FORBIDDEN_CALLS = {"getenv", "putenv", "setting", "load_settings"}


def _environment_reads(path: Path) -> list[str]:
    """Where a module touches ``os.environ``, calls ``getenv``/``setting(``, or parses the settings."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "environb"):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: os.{node.attr}")
        elif isinstance(node, ast.Name) and node.id in ("environ", "environb"):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.id}")
        elif isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in FORBIDDEN_CALLS:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}()")
    return found


def test_no_module_below_the_entry_points_reads_the_environment():
    modules = sorted((ROOT / "pipeline").rglob("*.py"))
    assert len(modules) > 50
    found = [read for path in modules if str(path.relative_to(ROOT)) not in ENTRY_POINTS
             for read in _environment_reads(path)]
    assert found == [], "read the value from the settings an entry point hands down:\n" + "\n".join(found)
    assert all((ROOT / path).exists() for path in ENTRY_POINTS)


def test_the_check_finds_what_it_forbids():
    probe = ROOT / "pipeline" / "settings" / "__init__.py"
    assert _environment_reads(probe)  # load_settings reads os.environ: the check sees it


def test_every_setting_is_defined_once():
    variables = [spec.variable for _, spec in all_specs()]
    assert len(variables) == len(set(variables)) and len(variables) >= 45


def test_the_defaults_are_the_tree_parsed_from_an_empty_environment():
    assert load_settings({}) == Settings()
    assert load_settings({"PIPELINE_API_DEADLINE_MS": ""}) == Settings()  # empty: the default, as unset


@pytest.mark.parametrize("variable, value, message", [
    ("PIPELINE_API_DEADLINE_MS", "abc", "PIPELINE_API_DEADLINE_MS: expected a number of milliseconds (above 0), "
                                        "got 'abc'"),
    ("PIPELINE_MAX_CONCURRENT", "0", "PIPELINE_MAX_CONCURRENT: expected a number of steps (at least 1), got '0'"),
    ("PIPELINE_MIN_FREE_MB", "-1", "PIPELINE_MIN_FREE_MB: expected a number of MiB (at least 0), got '-1'"),
    ("PIPELINE_END_DATE", "tomorrow", "PIPELINE_END_DATE: expected a day YYYY-MM-DD or open, got 'tomorrow'"),
    ("PIPELINE_BIGQUERY_TIMEOUT_S", "nan", "PIPELINE_BIGQUERY_TIMEOUT_S: expected a number of seconds"),
    ("PIPELINE_ONLINE_STORE", "postgres", "PIPELINE_ONLINE_STORE: expected one of sqlite, redis, got 'postgres'"),
])
def test_a_bad_value_names_its_variable(variable, value, message):
    with pytest.raises(SettingsError) as raised:
        load_settings({variable: value})
    assert str(raised.value).startswith(message)


def test_values_are_typed():
    settings = load_settings({"PIPELINE_API_MAX_CONNECTIONS": "12", "PIPELINE_CELERY_TIMEOUT_S": "2.5",
                              "PIPELINE_END_DATE": "open", "PIPELINE_SOURCE": "bigquery"})
    assert settings.api.max_connections == 12 and settings.celery.timeout_s == 2.5
    assert settings.source.end_date == "open" and settings.source.kind == "bigquery"
    assert settings.celery.result_backend_url == settings.celery.broker_url
