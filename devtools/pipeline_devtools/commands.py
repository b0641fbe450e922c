"""The project's console commands (``pipeline``, ``dg``, ``dagster``) of this environment, run in a
process of their own as an operator runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipeline_devtools import CHECKOUT

BIN = Path(sys.executable).parent


def console(*args: str, env: dict) -> str:
    """``args`` (a console command of this environment, then its arguments) run from the checkout with
    exactly ``env``; its output (stdout, then stderr). Fails the caller (AssertionError) when the command
    exits non-zero."""
    done = subprocess.run([str(BIN / args[0]), *args[1:]], env=env, capture_output=True, text=True, cwd=CHECKOUT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def pipeline_command(env: dict, *args: str) -> tuple[int, str]:
    """``pipeline ARGS`` with ``env`` over this process's environment: its exit code and its output
    (stdout, then stderr)."""
    done = subprocess.run([str(BIN / "pipeline"), *args], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=120)
    return done.returncode, done.stdout + done.stderr


def stop(process: subprocess.Popen, timeout_s: float = 15) -> None:
    """SIGTERM ``process`` and wait for it; SIGKILL it if it has not exited within ``timeout_s``."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
