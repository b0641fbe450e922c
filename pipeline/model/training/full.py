"""Full retrain: a fresh model trained for N epochs on every row of the window, in shuffled pools.

Each step is a pool of ``shuffle_chunks`` (day, chunk) pieces of the epoch's permutation, their
rows concatenated and shuffled together. After each epoch the held-out days (if any) are scored
and the best epoch kept; at the end of the plan the candidate is that epoch's model. The run is
saved after every step.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.data.processed_partition import read_chunk
from pipeline.model.batches import seeded_generator
from pipeline.model.training.selection import select_best_epoch, validate_epoch
from pipeline.model.training.session import TrainingSession


def train_full(session: TrainingSession) -> None:
    """Train the session's plan, pool by pool, from where its cursor stands."""
    config, state, cursor = session.config, session.state, session.cursor
    while not session.plan_done():
        epoch, pieces = cursor.plan[cursor.position]
        loss, rows = session.train_pool(_read_pool(session.dirs, pieces),
                                        seeded_generator(config.seed, epoch, "pool", cursor.position),
                                        "chunks " + ", ".join(f"{d}/{c}" for d, c in pieces), epoch)
        session.finish_step(epoch, sorted({d for d, _ in pieces}), loss, rows)
        if session.end_of_epoch(epoch):
            if cursor.validation:
                validate_epoch(session.model, session.optimizer, session.gatherer,
                               [session.dirs[d] for d in cursor.validation], cursor, epoch, session.log)
            session.start_epoch()
        if session.plan_done():
            state.trained = {d: session.manifests[d]["rows"] for _, pieces in cursor.plan for d, _ in pieces}
            select_best_epoch(session.model, session.optimizer, cursor, session.log)
        session.save()  # after every step; at the end of the plan it marks the run complete, unpublished


def _read_pool(dirs: dict[str, Path],
               pieces: tuple[tuple[str, int], ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pieces' (user rows, restaurant rows, clicks), each concatenated over the pieces."""
    parts = [read_chunk(dirs[d], c) for d, c in pieces]
    user_rows, restaurant_rows, clicks = (np.concatenate([part[i] for part in parts], dtype=dtype)
                                          for i, dtype in enumerate((np.int32, np.int32, np.float32)))
    return user_rows, restaurant_rows, clicks
