"""Benchmark: one measurement against the code of any checkout, for side-by-side comparisons.

    python bench/side_by_side.py --data DIR --what epoch [--code /tmp/baseline] [--warehouse W]
    python bench/side_by_side.py --data DIR --what reads --store {sqlite,redis} [--code /tmp/baseline]
                                 [--nearby METRES]

``--code`` is the repository whose ``pipeline`` package is measured (default: this one), e.g. a
``git worktree add /tmp/baseline <commit>``; run the two alternately. ``epoch``: one full-mode
training epoch over every processed day of ``--warehouse`` (built by that code's
``bench/training.py`` first), default config. ``reads``: the recommender over ``--requests``
requests of requests.parquet with all their candidates, features read from the store on every
request (after 200 warm-up requests), 1 torch thread; with ``--nearby M``, the same users without
a candidate list at the city centre, ``max_dist`` M metres. Each checkout serves as its API does:
the folded export as ONNX where the code has it (else the unfolded TorchScript), and the live
restaurant snapshot held where the code holds it. It also drives the store API before versioned
loads (``store.load`` per kind), so commits from before can be measured with it.
``peak_rss_mb`` is the process's high-water mark. Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import tempfile
import time
from pathlib import Path


def _configure_from_environment() -> None:
    """This script is an entry point: the pipeline's settings (PIPELINE_NATIVE_KERNELS, ...) from the
    environment. Older commits (--code) read the environment themselves."""
    try:
        from pipeline import runtime
        from pipeline.settings import load_settings
    except ImportError:
        return
    runtime.configure(load_settings())


def epoch(warehouse: Path) -> dict:
    from pipeline.data.layout import Warehouse

    try:
        from pipeline.model.training import TrainConfig, train
    except ImportError:  # before training was a package
        from pipeline.model.train import TrainConfig, train

    _configure_from_environment()
    config = TrainConfig(mode="full", epochs=1)
    if "checkpoint" in inspect.signature(train).parameters:  # the API before the model of record
        _, report = train(Warehouse(warehouse), warehouse / "side-by-side.pt", config, log=lambda m: None)
    else:
        report = train(Warehouse(warehouse), config, log=lambda m: None).report
    return {"epoch_seconds": round(report.epoch_seconds[0], 2), "rows": report.rows}


def _scorer(directory: Path):
    """The model as this checkout's API serves it (``directory`` scratch space)."""
    import torch

    from pipeline.model import export
    from pipeline.model.network import ClickMLP
    from pipeline.serving.scorer import ModelScorer

    torch.manual_seed(0)
    model = ClickMLP().eval()
    if hasattr(export, "write_formats"):  # the folded export, served as ONNX
        export.write_formats(model, directory)
        return ModelScorer(directory / "model.onnx", fmt="onnx"), "onnx"
    export.export_torchscript(model, directory / "model.pt")
    return ModelScorer(directory / "model.pt"), "torchscript"


def reads(data: Path, store_kind: str, count: int, nearby_m: float | None = None) -> dict:
    import numpy as np
    import pyarrow.parquet as pq
    import torch

    from pipeline.data.features import RESTAURANTS, USERS, read_source_features
    from pipeline.data.schema import LAT_RANGE, LON_RANGE
    from pipeline.geo.index import GeoIndex
    from pipeline.serving.recommender import Recommender
    from pipeline.store.redis_store import RedisStore
    from pipeline.store.sqlite import SQLiteStore
    from pipeline_devtools.redis_server import local_redis_server

    try:
        from pipeline.serving.request import Request
    except ImportError:  # before the request had its own module
        from pipeline.serving.recommender import Request

    torch.set_num_threads(1)
    users = read_source_features(data / "user_features.parquet", USERS)
    restaurants = read_source_features(data / "restaurant_features.parquet", RESTAURANTS)
    geo = GeoIndex.build(restaurants.ids, restaurants.locations[:, 0], restaurants.locations[:, 1])
    rows = pq.read_table(data / "requests.parquet").to_pylist()[:count]
    if nearby_m is None:
        requests = [Request(r["user_id"], r["latitude"], r["longitude"], tuple(r["candidate_restaurant_ids"]),
                            int(r["size"]), float(r["max_dist"]), bool(r["sort_dist"])) for r in rows]
    else:
        centre = (sum(LAT_RANGE) / 2, sum(LON_RANGE) / 2)
        requests = [Request(r["user_id"], *centre, None, int(r["size"]), nearby_m, bool(r["sort_dist"]))
                    for r in rows]
    with tempfile.TemporaryDirectory(prefix="bench-sbs-") as tmp, local_redis_server() as url:
        scorer, served_format = _scorer(Path(tmp))
        store = SQLiteStore(Path(tmp) / "online.db") if store_kind == "sqlite" else RedisStore(url)
        started = time.perf_counter()
        if hasattr(store, "publish"):
            from pipeline.store.base import FeatureTable

            store.publish(FeatureTable.of(users), FeatureTable.of(restaurants))
        else:  # before versioned loads
            store.load("users", users.ids, users.values, users.version)
            store.load("restaurants", restaurants.ids, restaurants.values, restaurants.version)
        load_seconds = time.perf_counter() - started
        recommender = Recommender(geo, store, scorer)
        held = hasattr(recommender, "hold")
        if held:
            recommender.hold(store.restaurant_features(store.live().number))
        for request in requests[:200]:
            recommender.recommend(request)
        times = []
        for request in requests:
            began = time.perf_counter()
            recommender.recommend(request)
            times.append(time.perf_counter() - began)
        store.close()
    ms = np.array(times) * 1000
    candidates = requests[0].candidate_restaurant_ids
    return {"store": store_kind, "requests": len(ms), "served_format": served_format, "restaurants_held": held,
            **({"candidates": len(candidates)} if candidates is not None else {"nearby_m": nearby_m}),
            "p50_ms": round(float(np.percentile(ms, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3),
            "load_seconds": round(load_seconds, 2)}


def main() -> None:
    here = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--what", choices=("epoch", "reads"), required=True)
    parser.add_argument("--code", type=Path, default=here, help="repository whose pipeline package is measured")
    parser.add_argument("--warehouse", type=Path, help="a prepared warehouse (epoch)")
    parser.add_argument("--store", choices=("sqlite", "redis"), default="sqlite")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--nearby", type=float, help="metres: requests without candidates at the city centre")
    args = parser.parse_args()
    sys.path.insert(0, str(args.code.resolve()))
    result = (epoch(args.warehouse.resolve()) if args.what == "epoch"
              else reads(args.data.resolve(), args.store, args.requests, args.nearby))
    from pipeline_devtools.benchmarks import machine
    from pipeline_devtools.process_metrics import peak_rss_mb

    print(json.dumps({**result, "peak_rss_mb": round(peak_rss_mb(), 1), "code": str(args.code.resolve()),
                      "machine": machine(),
                      "command": " ".join(["python", "bench/side_by_side.py", *sys.argv[1:]])}))


if __name__ == "__main__":
    main()
