"""Train in its own process (so a test can kill -9 it); print the final bookkeeping as JSON.

    python train.py WAREHOUSE MODE EPOCHS BATCH_SIZE [VALIDATION_DAYS]
"""

import json
import sys
import time
from pathlib import Path

from pipeline.data.layout import Warehouse
from pipeline.model.training import TrainConfig, train
from pipeline_devtools.process_metrics import peak_rss_mb

root, mode, epochs, batch = sys.argv[1:5]
validation_days = int(sys.argv[5]) if len(sys.argv) > 5 else 1
started = time.time()
result = train(Warehouse(Path(root)), TrainConfig(mode=mode, epochs=int(epochs), batch_size=int(batch), threads=1,
                                                  checkpoint_every_chunks=1, validation_days=validation_days),
               log=lambda message: None)
state = result.state
print(json.dumps({"trained": state.trained, "steps": state.steps, "rows_seen": state.rows_seen,
                  "resumed": result.report.resumed, "history_days": [h["day"] for h in state.history],
                  "published": result.published.version if result.published else None,
                  "days_trained": result.report.days, "started": started, "finished": time.time(),
                  "peak_rss_mb": peak_rss_mb()}))
