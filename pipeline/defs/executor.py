"""The executor, chosen by configuration so the same definitions scale out without code changes.

``PIPELINE_EXECUTOR``: ``multiprocess`` (default; steps in parallel processes, at most
``PIPELINE_MAX_CONCURRENT`` at once), ``in_process``, ``celery`` (needs ``dagster-celery``) or
``k8s`` (needs ``dagster-k8s``; each step a Kubernetes job). Run-level parallelism (how many
partition runs go at once) is the run queue's setting in ``dagster.yaml``.
"""

import dagster as dg

from pipeline.defs.settings import setting


def _import_optional(module: str, name: str, package: str):
    try:
        return getattr(__import__(module, fromlist=[name]), name)
    except ImportError as exc:
        raise ImportError(
            f"PIPELINE_EXECUTOR={setting('PIPELINE_EXECUTOR')} needs the '{package}' package: "
            f"pip install {package}") from exc


def executor_from_settings() -> dg.ExecutorDefinition:
    kind = setting("PIPELINE_EXECUTOR")
    if kind == "multiprocess":
        return dg.multiprocess_executor.configured(
            {"max_concurrent": int(setting("PIPELINE_MAX_CONCURRENT"))})
    if kind == "in_process":
        return dg.in_process_executor
    if kind == "celery":
        return _import_optional("dagster_celery", "celery_executor", "dagster-celery")
    if kind == "k8s":
        return _import_optional("dagster_k8s", "k8s_job_executor", "dagster-k8s")
    raise ValueError(
        f"PIPELINE_EXECUTOR={kind!r} is not one of multiprocess, in_process, celery, k8s")


@dg.definitions
def executor() -> dg.Definitions:
    """The code location's executor (picked up by ``load_from_defs_folder``)."""
    return dg.Definitions(executor=executor_from_settings())
