"""A brute-force recommender: Python loops, math.haversine, the eager model row by row."""

import math

import numpy as np
import torch

from pipeline.geo.distance import EARTH_RADIUS_M


def haversine(lat1, lon1, lat2, lon2):
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(a, 1.0)))


def brute_force(model, tables, user_id, lat, lon, candidates, size, max_dist, sort_dist):
    users = {int(i): tables.users[r] for r, i in enumerate(tables.user_snapshot.ids)}
    snapshot = tables.restaurant_snapshot
    rows = {int(i): r for r, i in enumerate(snapshot.ids)}
    if user_id not in users:
        raise LookupError(user_id)
    pool = sorted(set(candidates)) if candidates is not None else list(rows)
    found = []
    for rid in pool:
        if rid not in rows:
            continue
        r = rows[rid]
        d = haversine(lat, lon, snapshot.locations[r, 0], snapshot.locations[r, 1])
        if d <= max_dist:
            x = torch.cat([users[user_id], tables.restaurants[r]]).unsqueeze(0)
            with torch.no_grad():
                score = float(torch.sigmoid(model(x))[0])
            found.append((rid, score, d))
    key = (lambda t: (t[2], -t[1])) if sort_dist else (lambda t: (-t[1], t[2]))
    return sorted(found, key=key)[:size]


def as_arrays(result):
    if not result:
        return np.empty(0, np.int64), np.empty(0), np.empty(0)
    ids, scores, dists = zip(*result, strict=True)
    return np.array(ids), np.array(scores), np.array(dists)
