"""Load a synthetic feature version into a store in its own process (so a test can kill it, or run
two at once); print the version made live as JSON.

    python load_store.py sqlite PATH USERS SHIFT PAUSE
    python load_store.py redis URL#NAMESPACE USERS SHIFT PAUSE

Every user's features equal SHIFT; PAUSE seconds are slept per batch (to be killed mid-load).
"""

import json
import sys
import time

import numpy as np

import pipeline.store.base as base
from pipeline.store.base import FeatureTable
from pipeline.store.redis_store import RedisStore
from pipeline.store.sqlite import SQLiteStore

kind, address, users, shift, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
if kind == "sqlite":
    store = SQLiteStore(address)
else:
    url, namespace = address.split("#")
    store = RedisStore(url, namespace=namespace)
if pause:
    original = base.encode

    def slow_encode(values):
        time.sleep(pause)
        return original(values)

    import pipeline.store.redis_store as redis_store
    import pipeline.store.sqlite as sqlite

    sqlite.encode = redis_store.encode = slow_encode
    base.LOAD_BATCH = sqlite.LOAD_BATCH = redis_store.LOAD_BATCH = 1_000
ids = np.arange(users) * 3
version = store.publish(FeatureTable(ids, np.full((users, 30), shift, np.float32), f"users-{shift}"),
                        FeatureTable(np.arange(1_000) + 10, np.full((1_000, 10), shift, np.float32), f"r-{shift}"))
print(json.dumps({"version": version.number}))
