"""Helpers for the tests and the benchmarks, not shipped with the pipeline: throwaway servers (redis-server,
PostgreSQL, the BigQuery emulator, a fault-injecting proxy, Celery workers), ``pipeline serve`` and the
console commands as processes, a warehouse built straight from a reference dataset, process measurements,
and the plain helpers several test modules share. ``make install`` installs it editable from devtools/."""

from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
"""The project's checkout this package is installed from (editable): where the Makefile, deploy/ and
.venv-bigquery are, and where ``dg`` finds the project."""
