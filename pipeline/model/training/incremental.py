"""Incremental training: the new days in order, each scored before it is trained on.

Each step is one day: its prequential accuracy, AUC and log loss (the model before it has seen
the day) are taken first, then its chunks are trained in order. The run is saved every
``checkpoint_every_chunks`` chunks within a day and at the end of every day, so a resumed day
reads only the chunks left.
"""

from __future__ import annotations

from pipeline.data.processed_partition import read_chunk
from pipeline.model.batches import seeded_generator
from pipeline.model.training.scoring import score_partitions
from pipeline.model.training.session import TrainingSession


def train_incremental(session: TrainingSession) -> None:
    """Train the session's plan, day by day, from where its cursor stands."""
    config, state, cursor = session.config, session.state, session.cursor
    while not session.plan_done():
        epoch, pieces = cursor.plan[cursor.position]
        day = sorted({d for d, _ in pieces})[0]
        partition = session.dirs[day]  # the version validated, for the whole day
        if cursor.chunk == 0:
            scores = score_partitions(session.model, session.gatherer, [partition])
            cursor.pending = {"day": day, **{f"prequential_{k}": v for k, v in scores.items()}}
        day_loss, day_rows = 0.0, 0
        for index in range(cursor.chunk, len(pieces)):
            loss, rows = session.train_pool(read_chunk(partition, index),
                                            seeded_generator(config.seed, epoch, day, index),
                                            f"day {day}, chunk {index}", epoch)
            day_loss, day_rows = day_loss + loss, day_rows + rows
            cursor.chunk = index + 1
            if cursor.chunk % config.checkpoint_every_chunks == 0 and cursor.chunk < len(pieces):
                session.save()
        prequential = cursor.pending
        if prequential is None:  # a run is saved inside a day only with the day's scores
            raise ValueError(f"the unfinished run stands inside day {day} without its prequential scores: "
                             f"start the training run with restart: true to discard it")
        state.history.append(prequential)
        session.report.prequential.append(prequential)
        state.trained[day] = session.manifests[day]["rows"]
        session.finish_step(epoch, [day], day_loss, day_rows)
        session.end_of_epoch(epoch)  # incremental training is one epoch: it ends with the plan
        session.save()  # after every day; at the end of the plan it marks the run complete, unpublished
