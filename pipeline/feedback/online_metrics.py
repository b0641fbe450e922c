"""Online metrics of a day's labeled impressions, per model version and over all of them.

For each model version that answered: requests, impressions (restaurants shown), clicks, CTR
(clicks per impression), CTR@k for k = 1, 5, 10 (clicks at ranks ≤ k per impression at ranks ≤ k),
coverage (distinct restaurants shown / restaurants in the catalogue), and the mean score of the
shown restaurants that were clicked and of those that were not (a model whose clicked mean is not
above its not-clicked mean ranks no better than chance).

:func:`ctr_drops` compares a day with the previous one: a version whose CTR@5 falls below the
previous day's CTR@5 over all versions by more than ``margin`` (relative), once it has at least
``min_impressions`` impressions at ranks ≤ 5.
"""

from __future__ import annotations

import polars as pl

KS = (1, 5, 10)
ALL = "all"


def _summary(rows: pl.DataFrame, catalogue: int) -> dict:
    clicked = rows.filter(pl.col("clicked"))
    not_clicked = rows.filter(~pl.col("clicked"))
    impressions = len(rows)
    out = {"requests": rows.get_column("request_id").n_unique(), "impressions": impressions, "clicks": len(clicked),
           "ctr": len(clicked) / impressions if impressions else 0.0}
    for k in KS:
        top = rows.filter(pl.col("rank") <= k)
        out[f"impressions_at_{k}"] = len(top)
        out[f"ctr_at_{k}"] = int(top.get_column("clicked").sum()) / len(top) if len(top) else 0.0
    out["coverage"] = rows.get_column("restaurant_id").n_unique() / catalogue if catalogue else 0.0
    out["mean_score_clicked"] = float(clicked.get_column("score").to_numpy().mean()) if len(clicked) else 0.0
    out["mean_score_not_clicked"] = float(not_clicked.get_column("score").to_numpy().mean()) \
        if len(not_clicked) else 0.0
    return out


def online_metrics(rows: pl.DataFrame, catalogue: int) -> dict[str, dict]:
    """{model version: metrics, ``"all"``: metrics over every version} of a day's labeled rows."""
    metrics = {ALL: _summary(rows, catalogue)}
    for (version,), group in rows.group_by("model_version", maintain_order=True):
        metrics[str(version)] = _summary(group, catalogue)
    return metrics


def ctr_drops(today: dict[str, dict], previous: dict[str, dict] | None, margin: float,
              min_impressions: int) -> dict[str, str]:
    """{version: why} for each version whose CTR@5 fell below the previous day's by more than ``margin``."""
    if not previous or not previous.get(ALL, {}).get("impressions_at_5"):
        return {}
    bar = previous[ALL]["ctr_at_5"] * (1 - margin)
    return {version: (f"CTR@5 {m['ctr_at_5']:.4f} is below the previous day's {previous[ALL]['ctr_at_5']:.4f} "
                      f"by more than {margin:.0%} (over {m['impressions_at_5']} impressions at ranks ≤ 5)")
            for version, m in today.items()
            if version != ALL and m["impressions_at_5"] >= min_impressions and m["ctr_at_5"] < bar}


def ctr_by_rank(rows: pl.DataFrame, ranks: int = 10) -> dict[str, list[float]]:
    """{model version: click rate at rank 1…``ranks``} (NaN where nothing was shown at a rank)."""
    out: dict[str, list[float]] = {}
    top = rows.filter(pl.col("rank") <= ranks)
    for (version,), group in top.group_by("model_version", maintain_order=True):
        rates = group.group_by("rank").agg(pl.col("clicked").mean().alias("ctr"))
        by_rank = dict(zip(rates.get_column("rank").to_list(), rates.get_column("ctr").to_list(), strict=True))
        out[str(version)] = [float(by_rank.get(r, float("nan"))) for r in range(1, ranks + 1)]
    return out
