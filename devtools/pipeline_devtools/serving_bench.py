"""What the API benchmarks share: a warehouse with a reference dataset's serving artifacts, its
features loaded into an online store, and ``pipeline serve`` (this checkout's code or another's)
started on it, with the process measurements they report."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.data.layout import ReferenceDataset, Warehouse
from pipeline.data.schema import LAT_RANGE, LON_RANGE
from pipeline.geo.index import GeoIndex
from pipeline.store.base import FeatureTable
from pipeline.store.redis_store import RedisStore
from pipeline.store.sqlite import SQLiteStore
from pipeline_devtools.commands import stop
from pipeline_devtools.published_copies import copy_warehouse
from pipeline_devtools.redis_server import free_port, redis_server
from pipeline_devtools.warehouse_build import build_from_reference

START = date(2026, 1, 1)  # any: only the feature tables are used
SEED = 0
CENTRE = (sum(LAT_RANGE) / 2, sum(LON_RANGE) / 2)

# The seeded reference module exported by whichever checkout's code is on the path: the server of a
# baseline reads an export its own code wrote (an older reader may not know a newer export's formats).
_EXPORT = """
import sys, numpy as np, torch
from pathlib import Path
from pipeline.model.export import publish_export
from pipeline.model.network import ClickMLP
sample = torch.from_numpy(np.load(sys.argv[2]))
torch.manual_seed(int(sys.argv[3]))
publish_export(ClickMLP().eval(), Path(sys.argv[1]), sample, record={})
"""


def export_seeded_model(export_path: Path, sample_file: Path, code: Path | None = None) -> None:
    """Publish the seeded reference module at ``export_path`` with ``code``'s exporter (default:
    this checkout's), in a fresh process."""
    env = {**os.environ}
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code.resolve()), env.get("PYTHONPATH")]))
    # run where no checkout lies: ``-c`` puts the working directory first on the path
    subprocess.run([sys.executable, "-c", _EXPORT, str(export_path.resolve()), str(sample_file.resolve()), str(SEED)],
                   env=env, check=True, cwd=sample_file.parent)


def serving_warehouse(data: Path, root: Path, store, model: Path | None = None,
                      baseline_code: Path | None = None) -> tuple[Warehouse, Warehouse | None]:
    """A warehouse at ``root`` with ``data``'s feature snapshots and geo index and a model export
    (``model``, a TorchScript file, or the seeded reference module in every format), and
    ``store`` loaded with the features. With ``baseline_code``: a second warehouse beside it with
    the same snapshots and index and the same model exported by that checkout's code."""
    import numpy as np

    from pipeline.model.export import publish_torchscript_file

    warehouse = Warehouse(root)
    users, restaurants = build_from_reference(ReferenceDataset(data, START), warehouse, days=0)
    GeoIndex.build(restaurants.ids, restaurants.locations[:, 0], restaurants.locations[:, 1]).publish(
        warehouse.geo_index, restaurants.ids)
    sample_file = root.parent / f"{root.name}-sample.npy"
    np.save(sample_file, np.concatenate([users.values[:64], restaurants.values[:64]], axis=1))
    store.publish(FeatureTable.of(users), FeatureTable.of(restaurants))
    del users, restaurants
    baseline = copy_warehouse(warehouse, root.parent / f"{root.name}-baseline") if baseline_code else None
    if model:
        import torch

        for one in filter(None, (warehouse, baseline)):
            publish_torchscript_file(model, one.export, torch.from_numpy(np.load(sample_file)), record={})
    else:
        export_seeded_model(warehouse.export, sample_file)
        if baseline is not None:
            export_seeded_model(baseline.export, sample_file, baseline_code)
    return warehouse, baseline


def online_store(kind: str, directory: Path, stack: contextlib.ExitStack) -> tuple[Any, dict[str, str]]:
    """An empty online store of ``kind`` (``redis``: a local redis-server for the life of ``stack``;
    ``sqlite``: a file in ``directory``) and the settings that point ``pipeline serve`` at it."""
    if kind == "redis":
        url = stack.enter_context(redis_server()).url
        return RedisStore(url), {"PIPELINE_ONLINE_STORE": "redis", "REDIS_URL": url}
    store = SQLiteStore(directory / "features.db")
    return store, {"PIPELINE_ONLINE_STORE": "sqlite", "PIPELINE_SQLITE_PATH": str(store.path)}


def wait_ready(base: str, process: subprocess.Popen, timeout_s: float = 60, log: Path | None = None) -> float:
    """Seconds until ``/health`` answers 200; a server that exits or never gets ready raises with
    the end of its ``log``."""
    started = time.monotonic()
    while True:
        with contextlib.suppress(OSError):
            if urllib.request.urlopen(base + "/health", timeout=2).status == 200:
                return time.monotonic() - started
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}: {_tail(log)}")
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"the server did not become ready: {_tail(log)}")
        time.sleep(0.05)


def _tail(log: Path | None) -> str:
    return log.read_text()[-3000:] if log is not None and log.exists() else ""


@contextlib.contextmanager
def serving(warehouse: Warehouse, settings: dict[str, str], workers: int = 1, code: Path | None = None,
            command: list[str] | None = None, log: Path | None = None,
            hide: list[str] | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """``pipeline serve`` (or ``command``, given ``--port``'s value as ``{port}``) on a free port for
    ``warehouse``, with ``code`` first on the path if given, its output to ``log`` (default:
    discarded), and the modules in ``hide`` made unimportable in it (a baseline's server without
    packages its lock lacked); yields (base URL, process) once ready."""
    port = free_port()
    env = {**os.environ, "PIPELINE_WAREHOUSE_DIR": str(warehouse.root), "PIPELINE_API_DRAIN_S": "0", **settings}
    path = [str(code.resolve())] if code is not None else []
    if hide:
        hiding = Path(tempfile.mkdtemp(prefix="hide-"))
        (hiding / "sitecustomize.py").write_text(
            "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in hide))
        path.append(str(hiding))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [*path, env.get("PYTHONPATH")]))
    argv = ([part.replace("{port}", str(port)) for part in command] if command else
            [str(Path(sys.executable).parent / "pipeline"), "serve", "--port", str(port)])
    if workers != 1 and not command:
        argv += ["--workers", str(workers)]
    output = open(log, "w") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - closed below
    process = subprocess.Popen(argv, env=env, stdout=output, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        process.ready_s = wait_ready(base, process, log=log)  # type: ignore[attr-defined]
        yield base, process
    finally:
        if log is not None:
            output.close()
        stop(process)


def process_tree(pid: int) -> list[int]:
    """``pid`` and its children (a server and its workers)."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid, *map(int, children)]


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and of its live children, seconds."""
    ticks = 0
    for one in process_tree(pid):
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def status_mb(pid: int, field: str) -> float:
    """A memory field of ``/proc/PID/status`` (``VmRSS``, ``VmHWM``) in MiB; NaN when gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def nearby_requests(requests: Path, out: Path, max_dist: float) -> Path:
    """requests.parquet's users and sizes without candidates, at the city centre."""
    table = pq.read_table(requests)
    n = table.num_rows
    pq.write_table(pa.table({
        "user_id": table["user_id"], "latitude": pa.array([CENTRE[0]] * n), "longitude": pa.array([CENTRE[1]] * n),
        "candidate_restaurant_ids": pa.nulls(n, pa.list_(pa.int64())), "size": table["size"],
        "max_dist": pa.array([max_dist] * n), "sort_dist": table["sort_dist"]}), out)
    return out


# wrk's script: replay "path<TAB>body" lines in order; report one JSON line when done
REPLAY_LUA = """
local paths, bodies, i = {}, {}, 0
init = function(args)
  for line in io.lines(args[1]) do
    local tab = line:find("\\t")
    paths[#paths + 1] = line:sub(1, tab - 1)
    bodies[#bodies + 1] = line:sub(tab + 1)
  end
end
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", paths[i], {["Content-Type"] = "application/json"}, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests": %d, "seconds": %.6f, "p50_ms": %.3f, "p95_ms": %.3f, ' ..
    '"p99_ms": %.3f, "errors": %d}\\n', summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def wrk(base: str, script: Path, bodies: Path, seconds: float, connections: int) -> dict:
    """One closed-loop run: its JSON line, with requests/s."""
    result = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s", "-s",
                             str(script), base, "--", str(bodies)], capture_output=True, text=True, check=True)
    line = json.loads(result.stdout.strip().splitlines()[-1])
    return {**line, "rps": line["requests"] / line["seconds"]}


def median_of(runs: list[dict], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 3)


def wrk_replay(requests: Path, directory: Path) -> tuple[Path, Path]:
    """(bodies, script): ``requests`` as the "path<TAB>body" lines :data:`REPLAY_LUA` replays, and the script."""
    from pipeline.api.loadtest import request_bodies

    bodies, script = directory / "bodies.tsv", directory / "replay.lua"
    bodies.write_text("".join(f"{path}\t{body.decode()}\n" for path, body in request_bodies(requests)))
    script.write_text(REPLAY_LUA)
    return bodies, script


def alternating_rounds(sides: dict[str, tuple[str, subprocess.Popen]], script: Path, bodies: Path, requests: Path,
                       rounds: int, seconds: float, connections: int, rate: float
                       ) -> tuple[dict[str, list[dict]], dict[str, list[dict]], dict[str, float]]:
    """``rounds`` rounds over ``sides`` (name → (base URL, server process)), the order swapped every
    round: per side a ``wrk`` capacity run and, with ``rate``, an open-loop latency run at ``rate``
    requests/s, each ``seconds`` long, after a 2-second warm-up. Returns (capacity runs, latency
    runs, server CPU seconds over the capacity runs), by side."""
    from pipeline.api.loadtest import run

    capacity: dict[str, list[dict]] = {name: [] for name in sides}
    latency: dict[str, list[dict]] = {name: [] for name in sides}
    cpu = dict.fromkeys(sides, 0.0)
    for base, _ in sides.values():  # warm-up
        wrk(base, script, bodies, 2, connections)
    for round_number in range(rounds):
        for name in (sides if round_number % 2 == 0 else reversed(list(sides))):
            base, process = sides[name]
            before = cpu_seconds(process.pid)
            one = wrk(base, script, bodies, seconds, connections)
            cpu[name] += cpu_seconds(process.pid) - before
            capacity[name].append(one)
            if rate:
                latency[name].append(run(base, requests, rate, seconds))
            print(name, json.dumps({"capacity": one, "latency": latency[name][-1] if rate else None}),
                  file=sys.stderr)
    return capacity, latency, cpu


def side_figures(capacity: dict[str, list[dict]], latency: dict[str, list[dict]], cpu: dict[str, float],
                 rate: float) -> dict[str, dict]:
    """Per side of :func:`alternating_rounds`: median capacity, its rounds, errors, server CPU a
    request, and the open-loop medians at ``rate``."""
    return {name: {"rps_median": median_of(capacity[name], "rps"),
                   "rps": [round(r["rps"]) for r in capacity[name]],
                   "wrk_p95_ms_median": median_of(capacity[name], "p95_ms"),
                   "errors": sum(r["errors"] for r in capacity[name]),
                   "cpu_ms_per_request": round(1000 * cpu[name] / sum(r["requests"] for r in capacity[name]), 4),
                   "open_loop": {"rate": rate,
                                 **{k: median_of(latency[name], k) for k in ("p50_ms", "p95_ms", "p99_ms")},
                                 "errors": sum(r["errors"] for r in latency[name])}}
            for name in capacity}


def on_off_cost(results: dict[str, dict]) -> dict:
    """What ``on`` costs over ``off``: p95 at the open-loop rate and CPU a request (on minus off),
    capacity (on over off)."""
    on, off = results["on"], results["off"]
    return {"open_loop_p95_ms": round(on["open_loop"]["p95_ms"] - off["open_loop"]["p95_ms"], 3),
            "cpu_ms_per_request": round(on["cpu_ms_per_request"] - off["cpu_ms_per_request"], 4),
            "rps_ratio": round(on["rps_median"] / off["rps_median"], 3)}


def on_off_arguments(parser) -> None:
    """The arguments of an on/off side-by-side benchmark (``alternating_rounds`` of two servers)."""
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--store", choices=("redis", "sqlite"), default="redis")
