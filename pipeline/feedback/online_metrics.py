"""Online metrics of a day's labeled impressions, per model version and over all of them.

For each model version that answered: requests, impressions (restaurants shown), clicks, CTR
(clicks per impression), CTR@k for k = 1, 5, 10 (clicks at ranks ≤ k per impression at ranks ≤ k),
coverage (distinct restaurants shown / restaurants in the catalogue), and the mean score of the
shown restaurants that were clicked and of those that were not (a model whose clicked mean is not
above its not-clicked mean ranks no better than chance), and the AUC of its scores over the shown
restaurants (clicked against not).

:func:`shadow_metrics`: on the rows a shadow model also scored, the AUC of the answering model's
scores and of the shadow model's, on the same shown restaurants and clicks: the challenger's
offline figures on live traffic, from the impression log's own records.

:func:`ctr_drops` compares a day with the previous one: a version whose CTR@5 falls below the
previous day's CTR@5 over all versions by more than ``margin`` (relative), once it has at least
``min_impressions`` impressions at ranks ≤ 5.
"""

from __future__ import annotations

import polars as pl

KS = (1, 5, 10)
ALL = "all"


def _auc(score: str) -> pl.Expr:
    """AUC of ``score`` against ``clicked`` (Mann-Whitney U, ties at average ranks), within a group."""
    positives = pl.col("clicked").cast(pl.Float64).sum()
    negatives = pl.len() - positives
    ranks = pl.col(score).rank("average")
    return (ranks.filter(pl.col("clicked")).sum() - positives * (positives + 1) / 2) / (positives * negatives)


def _aggregations(catalogue: int) -> list[pl.Expr]:
    clicked, rank = pl.col("clicked"), pl.col("rank")
    return [pl.col("request_id").n_unique().alias("requests"), pl.len().alias("impressions"),
            clicked.cast(pl.Int64).sum().alias("clicks"),
            *[expression for k in KS for expression in (
                (rank <= k).cast(pl.Int64).sum().alias(f"impressions_at_{k}"),
                (clicked & (rank <= k)).cast(pl.Int64).sum().alias(f"clicks_at_{k}"))],
            (pl.col("restaurant_id").n_unique() / max(catalogue, 1)).alias("coverage"),
            pl.col("score").filter(clicked).mean().alias("mean_score_clicked"),
            pl.col("score").filter(~clicked).mean().alias("mean_score_not_clicked"),
            _auc("score").alias("auc")]


def _rates(row: dict, catalogue: int) -> dict:
    out = {"requests": row["requests"], "impressions": row["impressions"], "clicks": row["clicks"],
           "ctr": row["clicks"] / row["impressions"] if row["impressions"] else 0.0}
    for k in KS:
        shown = row[f"impressions_at_{k}"]
        out[f"impressions_at_{k}"] = shown
        out[f"ctr_at_{k}"] = row[f"clicks_at_{k}"] / shown if shown else 0.0
    out["coverage"] = float(row["coverage"] or 0.0) if catalogue else 0.0
    out["mean_score_clicked"] = float(row["mean_score_clicked"] or 0.0)
    out["mean_score_not_clicked"] = float(row["mean_score_not_clicked"] or 0.0)
    out["auc"] = _finite(row["auc"])
    return out


def _finite(value) -> float:
    return float(value) if value is not None and value == value and abs(value) != float("inf") else float("nan")


def shadow_metrics(rows: pl.LazyFrame | pl.DataFrame) -> list[dict]:
    """Per (answering model, shadow model): rows, clicks, and the AUC of each model's scores on the
    same shown restaurants."""
    paired = rows.lazy().filter(pl.col("shadow_score").is_not_null()).group_by("model_version", "shadow_version") \
        .agg(pl.len().alias("rows"), pl.col("clicked").cast(pl.Int64).sum().alias("clicks"),
             _auc("score").alias("auc"), _auc("shadow_score").alias("shadow_auc")).collect(engine="streaming")
    return [{**row, "auc": _finite(row["auc"]), "shadow_auc": _finite(row["shadow_auc"])}
            for row in paired.sort("model_version", "shadow_version").iter_rows(named=True)]


def online_metrics(rows: pl.LazyFrame | pl.DataFrame, catalogue: int) -> dict[str, dict]:
    """{model version: metrics, ``"all"``: metrics over every version} of a day's labeled rows
    (a lazy frame is aggregated by polars' streaming engine: memory does not grow with the day)."""
    lazy = rows.lazy()
    overall = lazy.select(_aggregations(catalogue)).collect(engine="streaming").row(0, named=True)
    if not overall["impressions"]:
        overall = {**overall, "requests": 0, "clicks": 0}
    metrics = {ALL: _rates(overall, catalogue)}
    versions = lazy.group_by("model_version").agg(_aggregations(catalogue)).collect(engine="streaming")
    for row in versions.sort("model_version").iter_rows(named=True):
        metrics[str(row["model_version"])] = _rates(row, catalogue)
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


def ctr_by_rank(rows: pl.LazyFrame | pl.DataFrame, ranks: int = 10) -> dict[str, list[float]]:
    """{model version: click rate at rank 1…``ranks``} (NaN where nothing was shown at a rank)."""
    rates = (rows.lazy().filter(pl.col("rank") <= ranks).group_by("model_version", "rank")
             .agg(pl.col("clicked").mean().alias("ctr")).collect(engine="streaming"))
    out: dict[str, dict[int, float]] = {}
    for row in rates.sort("model_version", "rank").iter_rows(named=True):
        out.setdefault(str(row["model_version"]), {})[row["rank"]] = float(row["ctr"])
    return {version: [by_rank.get(r, float("nan")) for r in range(1, ranks + 1)] for version, by_rank in out.items()}
