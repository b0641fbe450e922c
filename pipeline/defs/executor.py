"""The executor, chosen by configuration so the same definitions scale out without code changes.

``PIPELINE_EXECUTOR``: ``multiprocess`` (default; steps in parallel processes, at most
``PIPELINE_MAX_CONCURRENT`` at once), ``in_process``, ``celery`` (the ``celery`` extra: each step a
task on the ``PIPELINE_CELERY_BROKER_URL`` broker, run by ``pipeline worker`` processes; see
``pipeline/worker.py``) or ``k8s`` (the ``k8s`` extra: each step a Kubernetes job, see
``k8s_config``). Run-level parallelism (how many partition runs go at once) is the run queue's
setting in ``dagster.yaml``. docs/OPERATIONS.md, "Running on more machines".
"""

import dagster as dg

from pipeline.defs.settings import SETTINGS
from pipeline.settings import Settings


def _import_optional(module: str, name: str, extra: str):
    try:
        return getattr(__import__(module, fromlist=[name]), name)
    except ImportError as exc:
        raise ImportError(
            f"PIPELINE_EXECUTOR={extra} needs the project's '{extra}' extra "
            f"(pip install -e '.[{extra}]'; make install has it): {exc}") from exc


def k8s_config(max_concurrent: int) -> dict:
    """The ``k8s_job_executor``'s configuration. Image, environment, volumes (the warehouse's claim) and
    resources come from the run launcher's configuration in the Helm values (deploy/helm/values.yaml),
    which step jobs inherit; here: steps at once per run, and step jobs deleted with their run's pod
    and an hour after they finish."""
    return {"max_concurrent": max_concurrent,
            "enable_owner_references": True,
            "step_k8s_config": {"job_spec_config": {"ttl_seconds_after_finished": 3600}}}


def executor_from_settings(settings: Settings) -> dg.ExecutorDefinition:
    kind, max_concurrent = settings.dagster.executor, settings.dagster.max_concurrent
    if kind == "multiprocess":
        return dg.multiprocess_executor.configured({"max_concurrent": max_concurrent})
    if kind == "in_process":
        return dg.in_process_executor
    if kind == "celery":
        from pipeline.worker import executor_config

        return _import_optional("dagster_celery", "celery_executor", "celery").configured(executor_config(settings))
    if kind == "k8s":
        return _import_optional("dagster_k8s", "k8s_job_executor", "k8s").configured(k8s_config(max_concurrent))
    raise ValueError(
        f"PIPELINE_EXECUTOR={kind!r} is not one of multiprocess, in_process, celery, k8s")


@dg.definitions
def executor() -> dg.Definitions:
    """The code location's executor (picked up by ``load_from_defs_folder``)."""
    return dg.Definitions(executor=executor_from_settings(SETTINGS))
