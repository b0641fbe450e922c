"""Real `pipeline worker` processes for tests and benchmarks (PIPELINE_EXECUTOR=celery): started,
waited for until Celery reports them ready, and stopped with their step processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

BIN = Path(sys.executable).parent


@contextlib.contextmanager
def celery_workers(env: dict, names: list[str], log_dir: Path, timeout_s: float = 120) -> Iterator[
        dict[str, subprocess.Popen]]:
    """One worker per name (its output in ``log_dir/NAME.log``), ready when this yields; on exit
    each gets SIGTERM (warm shutdown), then SIGKILL, with its step processes (own process group)."""
    logs = {name: log_dir / f"{name}.log" for name in names}
    workers = {name: subprocess.Popen([str(BIN / "pipeline"), "worker", "--name", name], env=env,
                                      stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
               for name, log in logs.items()}
    try:
        deadline = time.monotonic() + timeout_s
        for name, log in logs.items():
            while f"{name}@" not in (text := log.read_text()) or " ready." not in text:
                if workers[name].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"worker {name} did not start:\n{text[-3000:]}")
                time.sleep(0.2)
        yield workers
    finally:
        for process in workers.values():
            _stop(process)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
