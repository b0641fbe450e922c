"""Benchmark: recommender latency by candidate count and store, against the naive path.

    python bench/scoring.py --data DIR [--requests 300] [--model PATH | --format onnx]

Ours: the pipeline's recommender (distance filter first, then one round trip for the user and
only the restaurants in range, then the served format scores them) with features read from the
store on every request; SQLite (WAL file) and Redis (a local redis-server started for the run).
Each row reports the format, the rows scored per request and this process's CPU ms per request.
Without a candidate list: every restaurant within ``max_dist`` (5, 10 and 20 km) of the city
centre, for the requests' users.
Naive: fetch every candidate's features, compute each candidate's H3 cell in Python and test it
against a grid_disk set (k from the average edge length), haversine per candidate, eager torch.
Requests come from requests.parquet; 100 candidates are the first 100 of each request's 1,000,
5,000 are its 1,000 plus 4,000 other random restaurants. The model is ``--model`` (its suffix names
its format) or, by default, the reference architecture seeded (latency does not depend on the
weights) exported as the pipeline exports it, served in ``--format``.
Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import h3.api.basic_int as h3
import numpy as np
import pyarrow.parquet as pq
import torch

from pipeline.data.features import RESTAURANTS, USERS, read_source_features
from pipeline.data.schema import LAT_RANGE, LON_RANGE
from pipeline.geo.distance import EARTH_RADIUS_M
from pipeline.geo.index import RESOLUTION, GeoIndex
from pipeline.model.export import write_formats
from pipeline.model.network import ClickMLP
from pipeline.serving.formats import FORMAT_FILES
from pipeline.serving.loadgen import closed_loop
from pipeline.serving.recommender import Recommender
from pipeline.serving.request import Request
from pipeline.serving.scorer import ModelScorer
from pipeline.store.base import FeatureTable
from pipeline.store.redis_store import RedisStore
from pipeline.store.sqlite import SQLiteStore
from pipeline_devtools.benchmarks import machine
from pipeline_devtools.redis_server import local_redis_server

CANDIDATES = (100, 1000, 5000)
WITHOUT_CANDIDATES_M = (5000.0, 10000.0, 20000.0)
CENTRE = (sum(LAT_RANGE) / 2, sum(LON_RANGE) / 2)


def requests_with(requests: list[dict], count: int, n_restaurants: int, seed: int = 0) -> list[Request]:
    rng = np.random.default_rng(seed)
    out = []
    for r in requests:
        ids = list(r["candidate_restaurant_ids"])
        if count <= len(ids):
            ids = ids[:count]
        else:
            others = np.setdiff1d(np.arange(n_restaurants), ids)
            ids = ids + rng.choice(others, min(count - len(ids), len(others)), replace=False).tolist()
        out.append(Request(r["user_id"], r["latitude"], r["longitude"], tuple(ids), int(r["size"]),
                           float(r["max_dist"]), bool(r["sort_dist"])))
    return out


class NaiveRecommender:
    """The peers' path: every candidate fetched, an H3 cell per candidate in Python, eager torch."""

    def __init__(self, store, model: ClickMLP, locations: dict[int, tuple[float, float]]):
        self.store, self.model, self.locations = store, model, locations
        self.edge = h3.average_hexagon_edge_length(RESOLUTION, unit="m")

    def recommend(self, request: Request):
        fetched = self.store.fetch(request.user_id, request.candidate_restaurant_ids)
        origin = h3.latlng_to_cell(request.latitude, request.longitude, RESOLUTION)
        disk = set(h3.grid_disk(origin, math.ceil(request.max_dist / (self.edge * 1.5)) + 1))
        ids = [i for i, ok in zip(request.candidate_restaurant_ids, fetched.found, strict=True) if ok]
        keep, dists = [], []
        for j, rid in enumerate(ids):
            lat, lon = self.locations[rid]
            if h3.latlng_to_cell(lat, lon, RESOLUTION) in disk:
                p1, p2 = math.radians(request.latitude), math.radians(lat)
                a = (math.sin((p2 - p1) / 2) ** 2
                     + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon - request.longitude) / 2) ** 2)
                d = 2 * EARTH_RADIUS_M * math.asin(math.sqrt(a))
                if d <= request.max_dist:
                    keep.append(j)
                    dists.append(d)
        x = torch.tensor(np.hstack([np.repeat(fetched.user[None], len(keep), 0), fetched.restaurants[keep]]))
        with torch.no_grad():
            scores = torch.sigmoid(self.model(x)).numpy() if len(keep) else np.empty(0)
        order = np.argsort(dists if request.sort_dist else -scores, kind="stable")[: request.size]
        return [(ids[keep[i]], float(scores[i]), dists[i]) for i in order]


def without_candidates(requests: list[dict], max_dist: float) -> list[Request]:
    """The requests' users asking for every restaurant within ``max_dist`` of the city centre."""
    return [Request(r["user_id"], *CENTRE, None, int(r["size"]), max_dist) for r in requests]


def measure(call, requests: list[Request], count: int, recommender: Recommender | None = None) -> dict:
    for request in requests[:20]:
        call(request)
    answered, scored = (recommender.answers, recommender.rows_scored) if recommender else (0, 0)
    s = closed_loop(call, requests, count).summary()
    out = {"p50_ms": round(s["p50_ms"], 3), "p95_ms": round(s["p95_ms"], 3), "p99_ms": round(s["p99_ms"], 3),
           "requests": s["requests"], "errors": s["errors"], "cpu_ms_per_request": round(s["cpu_ms_per_request"], 3)}
    if recommender:
        out["rows_scored_per_request"] = round((recommender.rows_scored - scored) / (recommender.answers - answered), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--requests", type=int, default=300, help="timed requests per configuration")
    parser.add_argument("--model", type=Path, help="an exported model file (default: the seeded reference module)")
    parser.add_argument("--format", default="onnx", choices=("onnx", "torchscript", "exported_program"),
                        help="the format to serve the default model in")
    args = parser.parse_args()
    torch.set_num_threads(1)
    users = read_source_features(args.data / "user_features.parquet", USERS)
    restaurants = read_source_features(args.data / "restaurant_features.parquet", RESTAURANTS)
    geo = GeoIndex.build(restaurants.ids, restaurants.locations[:, 0], restaurants.locations[:, 1])
    raw_requests = pq.read_table(args.data / "requests.parquet").to_pylist()
    locations = {int(i): (float(a), float(b)) for i, (a, b) in zip(restaurants.ids, restaurants.locations,
                                                                   strict=True)}
    result = {"results": [], "baseline": [], "load_seconds": {}}
    with tempfile.TemporaryDirectory(prefix="bench-scoring-") as tmp, local_redis_server() as redis_url:
        torch.manual_seed(0)
        eager = ClickMLP().eval()
        if args.model is None:
            write_formats(eager, Path(tmp))
            scorer = ModelScorer(Path(tmp) / FORMAT_FILES[args.format], fmt=args.format)
        else:
            scorer = ModelScorer(args.model)
        result["format"] = scorer.format
        stores = {"sqlite": SQLiteStore(Path(tmp) / "online.db"), "redis": RedisStore(redis_url)}
        for name, store in stores.items():
            started = time.perf_counter()
            store.publish(FeatureTable.of(users), FeatureTable.of(restaurants))
            result["load_seconds"][name] = round(time.perf_counter() - started, 2)
        for count in CANDIDATES:
            requests = requests_with(raw_requests, count, len(restaurants.ids))
            for name, store in stores.items():
                ours = Recommender(geo, store, scorer)
                result["results"].append({"store": name, "candidates": count,
                                          **measure(ours.recommend, requests, args.requests, ours)})
                naive = NaiveRecommender(store, eager, locations)
                result["baseline"].append({"store": name, "candidates": count,
                                           **measure(naive.recommend, requests, max(50, args.requests // 3))})
                print(json.dumps(result["results"][-1]), json.dumps(result["baseline"][-1]), file=sys.stderr)
        for max_dist in WITHOUT_CANDIDATES_M:
            requests = without_candidates(raw_requests, max_dist)
            for name, store in stores.items():
                ours = Recommender(geo, store, scorer)
                result["results"].append({"store": name, "candidates": None, "max_dist": max_dist,
                                          **measure(ours.recommend, requests, args.requests, ours)})
                print(json.dumps(result["results"][-1]), file=sys.stderr)
        for store in stores.values():
            store.close()
    result["machine"] = machine()
    result["command"] = " ".join(["python", "bench/scoring.py", *sys.argv[1:]])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
