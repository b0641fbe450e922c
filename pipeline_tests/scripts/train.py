"""Train in its own process (so a test can kill -9 it); print the final bookkeeping as JSON.

    python train.py WAREHOUSE CHECKPOINT MODE EPOCHS BATCH_SIZE
"""

import json
import sys
from pathlib import Path

from pipeline.data.layout import Warehouse
from pipeline.metrics import peak_rss_mb
from pipeline.model.train import TrainConfig, train

root, checkpoint, mode, epochs, batch = sys.argv[1:]
state, report = train(Warehouse(Path(root)), Path(checkpoint),
                      TrainConfig(mode=mode, epochs=int(epochs), batch_size=int(batch), threads=1,
                                  checkpoint_every_chunks=1), log=lambda message: None)
print(json.dumps({"trained": state.trained, "steps": state.steps, "rows_seen": state.rows_seen,
                  "resumed": report.resumed, "history_days": [h["day"] for h in state.history],
                  "peak_rss_mb": peak_rss_mb()}))
