"""The release evaluation: one model scored on the held-out data a release decision compares on.

- **The test files** (the reference's held-out clicks): accuracy, AUC, log loss, the calibration
  table and its expected calibration error (:func:`pipeline.model.evaluate.evaluate_files`).
- **Logged lists**: the requests of the newest labeled impression days that labeling held out of
  training (``held_out``, :data:`pipeline.feedback.labels.HELD_OUT_PERCENT` of requests), each
  list re-ranked by the model: NDCG@5 and @10 against the clicks, and AUC within each user averaged
  over users. At most :data:`MAX_LOGGED_ROWS` rows, newest days first, whole requests.

A candidate and the champion are evaluated by the same call on the same rows and feature tables,
so their figures differ only by the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import torch

from pipeline.data.layout import Warehouse
from pipeline.feedback import labels
from pipeline.model import inputs, metrics
from pipeline.model.batches import FeatureTables
from pipeline.model.evaluate import EVAL_BATCH, evaluate_files
from pipeline.model.network import ClickMLP, fused_logits
from pipeline.publish import Artifact

LOGGED_DAYS = 3
MAX_LOGGED_ROWS = 2_000_000
_LOGGED_COLUMNS = ("request_id", "user_id", "restaurant_id", "rank", "clicked")


def logged_list_files(warehouse: Warehouse, days: int = LOGGED_DAYS) -> list[Path]:
    """The labeled rows of the newest ``days`` labeled impression days (newest first) that mark
    their held-out requests."""
    found = []
    for directory in sorted((warehouse.root / "labeled_impressions").glob("date=*"), reverse=True):
        artifact = Artifact(directory)
        if artifact.live_version() is None:
            continue
        path = artifact.live() / labels.LABELED
        if "held_out" in pl.read_parquet_schema(path):
            found.append(path)
        if len(found) == days:
            break
    return found


def read_logged_lists(files: Sequence[Path], max_rows: int = MAX_LOGGED_ROWS) -> pl.DataFrame:
    """The held-out requests' rows (request, user, restaurant, rank, clicked), in logged order,
    whole requests up to ``max_rows`` rows."""
    frames, rows = [], 0
    for path in files:
        frame = (pl.scan_parquet(path).filter(pl.col("held_out")).select(_LOGGED_COLUMNS)
                 .sort("request_id", "rank").collect())
        if rows + len(frame) > max_rows:
            sizes = frame.group_by("request_id", maintain_order=True).len()
            fits = sizes.filter(pl.col("len").cum_sum() <= max_rows - rows).get_column("request_id")
            frame = frame.filter(pl.col("request_id").is_in(fits.implode()))
        frames.append(frame)
        rows += len(frame)
        if rows >= max_rows:
            break
    if not frames:
        return pl.DataFrame(schema={"request_id": pl.String, "user_id": pl.Int64, "restaurant_id": pl.Int64,
                                    "rank": pl.Int32, "clicked": pl.Boolean})
    return pl.concat(frames)


def model_logits(model: ClickMLP, tables: FeatureTables, user_rows: np.ndarray, restaurant_rows: np.ndarray
                 ) -> np.ndarray:
    """The model's logit for each (user row, restaurant row) pair, in order."""
    out = np.empty(len(user_rows), np.float32)
    x = torch.empty(min(EVAL_BATCH, max(len(user_rows), 1)), inputs.WIDTH)
    with torch.inference_mode():
        for start in range(0, len(user_rows), EVAL_BATCH):
            end = min(start + EVAL_BATCH, len(user_rows))
            batch = x[:end - start]
            inputs.gather(tables.users, tables.restaurants, torch.from_numpy(user_rows[start:end]),
                          torch.from_numpy(restaurant_rows[start:end]), out=batch)
            out[start:end] = fused_logits(model, batch).numpy()
    return out


class LoggedLists:
    """Held-out logged lists resolved to feature rows once, for scoring any number of models."""

    def __init__(self, rows: pl.DataFrame, tables: FeatureTables):
        user_rows = tables.user_snapshot.index.rows(rows.get_column("user_id").to_numpy())
        restaurant_rows = tables.restaurant_snapshot.index.rows(rows.get_column("restaurant_id").to_numpy())
        known = (user_rows >= 0) & (restaurant_rows >= 0)
        self.unresolved = int((~known).sum())
        self.user_rows = user_rows[known].astype(np.int32)
        self.restaurant_rows = restaurant_rows[known].astype(np.int32)
        kept = rows.filter(pl.Series(known))
        self.clicks = kept.get_column("clicked").to_numpy().astype(np.int8)
        self.requests = kept.get_column("request_id").rank("dense").to_numpy().astype(np.int64)
        self.users = kept.get_column("user_id").to_numpy()
        self.logged_rank = kept.get_column("rank").to_numpy()

    def __len__(self) -> int:
        return len(self.clicks)

    def score(self, model: ClickMLP, tables: FeatureTables) -> dict:
        """Ranking quality of re-ranking every list by ``model`` (empty lists: NaN figures)."""
        logits = model_logits(model, tables, self.user_rows, self.restaurant_rows)
        ndcg5, requests = metrics.ndcg_at(5, logits, self.clicks, self.requests)
        ndcg10, _ = metrics.ndcg_at(10, logits, self.clicks, self.requests)
        user_auc, users = metrics.grouped_auc(logits, self.clicks, self.users)
        logged5, _ = metrics.ndcg_at(5, -self.logged_rank.astype(np.float64), self.clicks, self.requests)
        return {"ndcg_at_5": ndcg5, "ndcg_at_10": ndcg10, "user_auc": user_auc, "logged_rows": len(self),
                "logged_requests_with_clicks": requests, "users_with_both": users,
                "logged_unresolved_rows": self.unresolved, "served_ndcg_at_5": logged5}


def evaluate(model: ClickMLP, tables: FeatureTables, test_files: Sequence[Path],
             logged: LoggedLists | None) -> dict:
    """Every figure a release decision compares: the test files' (with the calibration error) and,
    when there are logged lists, theirs."""
    evaluation = evaluate_files(model, test_files, tables)
    evaluation["calibration_error"] = metrics.calibration_error(evaluation["calibration"])
    if logged is not None and len(logged):
        evaluation.update(logged.score(model, tables))
    return evaluation
