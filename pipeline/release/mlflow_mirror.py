"""Optional: training runs and the model roles mirrored to an MLflow tracking store.

With the ``mlflow`` extra installed and ``PIPELINE_MLFLOW_TRACKING_URI`` set, each training run is
an MLflow run of the experiment ``click_model`` (its parameters, each trained day's prequential
scores as a step, the release evaluation's figures, tags naming the checkpoint version, lineage and
role); each export is logged to its run and registered as a version of the registered model
``click_model``; and the roles are mirrored as its aliases ``champion`` and ``challenger``.

The pipeline never reads a decision from MLflow: the registry (:mod:`pipeline.release.registry`)
decides, and a mirror that fails (the store down, the extra missing) is logged and skipped; an
HTTP store is given 10 s a request and one retry (:data:`HTTP_BOUNDS`, which the entry points set
as MLflow's ``MLFLOW_HTTP_REQUEST_*`` variables with :func:`bound_http` unless they are set already:
MLflow reads only those, and otherwise retries a store that is down for minutes).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, MutableMapping
from pathlib import Path

from pipeline.redaction import redact
from pipeline.release.registry import Roles

EXPERIMENT = MODEL = "click_model"
VERSION_TAG = "pipeline.checkpoint_version"
ALIASES = ("champion", "challenger")
log = logging.getLogger("pipeline.release")
HTTP_BOUNDS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
               "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def bound_http(environment: MutableMapping[str, str]) -> None:
    """Set :data:`HTTP_BOUNDS` in ``environment`` (an entry point's ``os.environ``) where unset."""
    for variable, value in HTTP_BOUNDS.items():
        environment.setdefault(variable, value)


def available() -> bool:
    return importlib.util.find_spec("mlflow") is not None


class MlflowMirror:
    """The mirror of one tracking store; every call is best effort (see the module docstring)."""

    def __init__(self, tracking_uri: str, warn: Callable[[str], None] = log.warning):
        self.tracking_uri, self.warn = tracking_uri, warn

    def _client(self):
        import mlflow
        from mlflow.tracking import MlflowClient

        mlflow.set_tracking_uri(self.tracking_uri)
        return mlflow, MlflowClient(self.tracking_uri)

    def _safely(self, what: str, call: Callable[[], object]) -> object:
        try:
            return call()
        except Exception as error:  # noqa: BLE001 - MLflow is a mirror: nothing here may stop the pipeline
            self.warn(redact(f"MLflow ({what}) skipped: {type(error).__name__}: {str(error)[:300]}"))
            return None

    def log_training(self, version: str, params: dict, per_day: list[dict], evaluation: dict, tags: dict) -> None:
        """One run per published checkpoint version: parameters, per-day scores, evaluation, tags."""
        def log_run() -> None:
            mlflow, _ = self._client()
            mlflow.set_experiment(EXPERIMENT)
            with mlflow.start_run(run_name=version, tags={VERSION_TAG: version, **tags}):
                mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
                for step, day in enumerate(per_day):
                    mlflow.log_metrics({k: float(v) for k, v in day.items() if isinstance(v, int | float)}, step=step)
                mlflow.log_metrics({k: float(v) for k, v in evaluation.items()
                                    if isinstance(v, int | float) and v == v})
        self._safely("training run", log_run)

    def _run_of(self, client, version: str):
        experiment = client.get_experiment_by_name(EXPERIMENT)
        if experiment is None:
            return None
        runs = client.search_runs([experiment.experiment_id], f"tags.`{VERSION_TAG}` = '{version}'", max_results=1)
        return runs[0] if runs else None

    def log_export(self, version: str, directory: Path) -> None:
        """The export of checkpoint ``version``: its files logged to the version's run and registered
        as a model version (tagged with the checkpoint version)."""
        def register() -> None:
            mlflow, client = self._client()
            run = self._run_of(client, version)
            if run is None:
                mlflow.set_experiment(EXPERIMENT)
                run = mlflow.start_run(run_name=version, tags={VERSION_TAG: version}).info
                mlflow.end_run()
                run = client.get_run(run.run_id)
            client.log_artifacts(run.info.run_id, str(directory), "export")
            if not client.search_registered_models(f"name = '{MODEL}'"):
                client.create_registered_model(MODEL)
            client.create_model_version(MODEL, f"{run.info.artifact_uri}/export", run.info.run_id,
                                        tags={VERSION_TAG: version})
        self._safely("export", register)

    def mirror_roles(self, roles: Roles) -> None:
        """Aliases ``champion`` and ``challenger`` on the registered model versions of the roles'
        checkpoints (an alias whose role is vacant, or not registered, is removed)."""
        def mirror() -> None:
            _, client = self._client()
            if not client.search_registered_models(f"name = '{MODEL}'"):
                return
            registered = {v.tags.get(VERSION_TAG): v.version for v in client.search_model_versions(f"name = '{MODEL}'")}
            for alias, checkpoint in zip(ALIASES, (roles.champion, roles.challenger), strict=True):
                if checkpoint and checkpoint in registered:
                    client.set_registered_model_alias(MODEL, alias, registered[checkpoint])
                else:
                    try:
                        client.delete_registered_model_alias(MODEL, alias)
                    except Exception:  # noqa: BLE001, S110 - no such alias: nothing to remove
                        pass
        self._safely("roles", mirror)


def mirror(tracking_uri: str, warn: Callable[[str], None] = log.warning) -> MlflowMirror | None:
    """The mirror for ``tracking_uri``; None when it is unset, or the extra is not installed (said once)."""
    if not tracking_uri:
        return None
    if not available():
        warn("PIPELINE_MLFLOW_TRACKING_URI is set but mlflow is not installed (pip install '.[mlflow]'): not mirrored")
        return None
    return MlflowMirror(tracking_uri, warn)
