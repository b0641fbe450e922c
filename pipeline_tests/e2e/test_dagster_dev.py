"""``dagster dev -w workspace.yaml`` and ``dg dev`` started side by side from the repository root, each
serving the code location."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pipeline_devtools.redis_server import free_port

ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent
LOCATIONS_QUERY = ('{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus locationOrLoadError '
                   '{ __typename ... on PythonError { message } } } } } }')


def _locations(port: int) -> list[dict] | None:
    """The webserver's code locations, or None while it is not answering yet."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", method="POST",
                                     data=json.dumps({"query": LOCATIONS_QUERY}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())["data"]["workspaceOrError"]["locationEntries"]
    except OSError:
        return None


@pytest.mark.slow
def test_dagster_dev_with_the_workspace_file_and_dg_dev_both_serve_the_location(tmp_path):
    """``dagster dev -w workspace.yaml`` and ``dg dev`` (which reads [tool.dg]), started side by side
    from the repository root, each serve the one code location ``pipeline``, loaded without error.
    Their instances cannot launch a run and their source is empty, so the daemons' sensors do nothing.
    Each has a DAGSTER_HOME of its own: two instances creating one SQLite storage at once race."""
    env = {**os.environ, "VIRTUAL_ENV": str(BIN.parent),
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PIPELINE_DATASET_DIR": str(tmp_path / "no_dataset"),
           "PIPELINE_WAREHOUSE_DIR": str(tmp_path / "warehouse")}
    commands = {"dagster dev -w workspace.yaml": [str(BIN / "dagster"), "dev", "-w", "workspace.yaml"],
                "dg dev": [str(BIN / "dg"), "dev"]}
    servers = {}
    try:
        for name, command in commands.items():
            home = tmp_path / f"dagster_home_{name.split()[0]}"
            home.mkdir()
            (home / "dagster.yaml").write_text("run_queue:\n  max_concurrent_runs: 0\ntelemetry:\n  enabled: false\n")
            port = free_port()
            log = open(tmp_path / f"{name.split()[0]}.log", "wb")
            servers[name] = (port, log, subprocess.Popen(
                [*command, "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT,
                env={**env, "DAGSTER_HOME": str(home)}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        deadline, loaded = time.monotonic() + 180, {}
        while len(loaded) < len(servers) and time.monotonic() < deadline:
            for name, (port, log, process) in servers.items():
                assert process.poll() is None, f"{name} exited: {Path(log.name).read_text(errors='replace')[-3000:]}"
                entries = _locations(port)
                if name not in loaded and entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    loaded[name] = entries
            time.sleep(0.5)
        expected = [{"name": "pipeline", "loadStatus": "LOADED",
                     "locationOrLoadError": {"__typename": "RepositoryLocation"}}]
        assert loaded == dict.fromkeys(commands, expected)
    finally:
        _stop_groups([process for _, _, process in servers.values()])
        for _, log, _ in servers.values():
            log.close()


def _stop_groups(processes: list[subprocess.Popen], grace: float = 5.0) -> None:
    """Interrupt each server's process group as Ctrl-C would, then kill whatever is left of them."""
    for signum in (signal.SIGINT, signal.SIGKILL):
        for process in processes:
            try:
                os.killpg(process.pid, signum)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        for process in processes:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass
