"""Process one partition in its own process, as the asset does; print rows and peak RSS as JSON.

    python process_partition.py OUT_DIR USERS RESTAURANTS FILE [FILE ...]
"""

import json
import sys
from pathlib import Path

import numpy as np

from pipeline.data.clicks import publish_partition
from pipeline.data.id_index import IdIndex
from pipeline_devtools.process_metrics import peak_rss_mb

out, n_users, n_restaurants, *files = sys.argv[1:]
stats, _ = publish_partition([Path(f) for f in files], IdIndex(np.arange(int(n_users))),
                          IdIndex(np.arange(int(n_restaurants))), Path(out))
print(json.dumps({"rows": stats.rows, "duplicates": stats.duplicates,
                  "peak_rss_mb": peak_rss_mb()}))
