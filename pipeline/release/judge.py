"""The canary's judge: the challenger against the champion on live traffic, from the impression
log and the click events.

Users are split by a hash (:func:`pipeline.serving.arms.in_canary`), so the two arms are random
samples of the same traffic over the same time. The judge takes the answers logged since the
challenger was recorded, joins their clicks, and compares per request:

- **CTR@k**: clicks on the first ``k`` shown restaurants over the number shown there (≤ k), per
  request, averaged per user, then over the arm's users; the arms are compared with Welch's
  standard error over users. Users, not requests or impressions, are the independent units: one
  user's requests share their tastes, so counting requests as independent would make a canary of
  a few heavy users look certain.
- **errors**: canary requests the challenger failed on (the champion answered them);
- **latency**: p95 of the logged time to answer.

Verdicts (:class:`Policy`):

- ``rollback`` as soon as the challenger is clearly worse: the upper bound of the one-sided
  ``rollback_confidence`` interval of CTR@k(challenger) − CTR@k(champion) is below 0; or its error
  rate exceeds ``max_error_rate`` (with at least ``min_errors`` errors); or its p95 latency exceeds
  the champion's × ``latency_ratio`` + ``latency_slack_ms``;
- ``promote`` once the canary holds ``min_requests`` requests and the lower bound of the one-sided
  ``confidence`` interval of the difference is above −``margin`` (not worse by more than the
  margin: a non-inferiority test), with errors and latency within bounds;
- ``wait`` otherwise.

The judge looks again every few minutes, so the nominal error rates hold for one look, not for
the sequence; the rollback side is the stricter (99%) to keep a good challenger from being rolled
back by chance, and the promote side needs the minimum sample first.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import NormalDist

import numpy as np
import polars as pl

from pipeline.feedback import click_events
from pipeline.feedback.log_format import BadSegment, read_segment, segments


@dataclass(frozen=True)
class Policy:
    """The judge's thresholds (documented in docs/OPERATIONS.md, "Releasing a model")."""

    k: int = 5
    min_requests: int = 500              # canary requests before a promotion
    margin: float = 0.01                 # CTR@k the challenger may lose and still be promoted
    confidence: float = 0.95             # one-sided, for the promotion
    rollback_confidence: float = 0.99    # one-sided, for "clearly worse"
    max_error_rate: float = 0.001
    min_errors: int = 3
    latency_ratio: float = 1.5
    latency_slack_ms: float = 2.0
    min_latency_requests: int = 200


@dataclass
class Arm:
    requests: int = 0
    users: int = 0
    ctr: float = float("nan")
    variance: float = float("nan")
    clicks: int = 0
    impressions: int = 0
    p95_ms: float = float("nan")
    errors: int = 0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass
class Verdict:
    action: str                      # promote, rollback, wait
    reasons: list[str]
    champion: Arm
    challenger: Arm
    difference: float = float("nan")   # CTR@k challenger − champion
    lower: float = float("nan")        # one-sided lower bound (confidence)
    upper: float = float("nan")        # one-sided upper bound (rollback_confidence)
    since: str = ""
    figures: dict = field(default_factory=dict)

    def metrics(self) -> dict[str, float | int]:
        """Flat numeric figures for the record and the UI."""
        flat = {"difference": self.difference, "lower_bound": self.lower, "upper_bound": self.upper}
        for name, arm in (("champion", self.champion), ("challenger", self.challenger)):
            flat.update({f"{name}_{k}": v for k, v in asdict(arm).items() if k != "variance"})
            flat[f"{name}_error_rate"] = arm.error_rate
        return flat

    def describe(self) -> str:
        return (f"{self.action}: CTR@k challenger {self.challenger.ctr:.4f} ({self.challenger.requests} requests, "
                f"{self.challenger.users} users) against champion {self.champion.ctr:.4f} ({self.champion.requests}, "
                f"{self.champion.users}); difference "
                f"{self.difference:+.4f}, bounds [{self.lower:+.4f}, {self.upper:+.4f}]; " + "; ".join(self.reasons))


def days_between(since: dt.datetime, until: dt.datetime) -> list[str]:
    """The UTC days from ``since``'s to ``until``'s, both included."""
    day, days = since.date(), []
    while day <= until.date():
        days.append(day.isoformat())
        day += dt.timedelta(days=1)
    return days


def logged_answers(log_dir: Path, since: dt.datetime, until: dt.datetime | None = None) -> pl.DataFrame:
    """The logged answers served since ``since``: request, model version, canary flag, latency and
    the shown list (unreadable segments are skipped: the day's collection names them)."""
    until = until or dt.datetime.now(dt.UTC)
    tables = []
    for day in days_between(since, until):
        for path in segments(log_dir, day):
            try:
                table = read_segment(path)
            except BadSegment:
                continue
            tables.append(pl.DataFrame(table.select(["request_id", "served_at", "user_id", "model_version",
                                                      "canary", "latency_us", "restaurant_ids"])))
    if not tables:
        return pl.DataFrame(schema={"request_id": pl.String, "served_at": pl.Datetime("us", "UTC"),
                                    "user_id": pl.Int64, "model_version": pl.String, "canary": pl.Boolean,
                                    "latency_us": pl.Int32, "restaurant_ids": pl.List(pl.Int64)})
    answers = pl.concat(tables)
    return answers.filter(pl.col("served_at") >= since).unique("request_id", keep="first")


def clicked_pairs(files: list[Path]) -> pl.DataFrame:
    """Distinct clicked (request_id, restaurant_id) pairs of click event files (unreadable ones skipped)."""
    frames = []
    for path in files:
        try:
            frames.append(pl.DataFrame(click_events.read(path)))
        except click_events.BadClickFile:
            continue
    if not frames:
        return pl.DataFrame(schema={"request_id": pl.String, "restaurant_id": pl.Int64})
    return pl.concat(frames).filter(pl.col("clicked")).select("request_id", "restaurant_id").unique()


def per_request(answers: pl.DataFrame, clicks: pl.DataFrame, k: int) -> pl.DataFrame:
    """Each answer's CTR@k (clicks on its first k shown over how many were shown there)."""
    top = answers.select("request_id", pl.col("restaurant_ids").list.head(k).alias("restaurant_id")) \
        .explode("restaurant_id").drop_nulls("restaurant_id")
    hits = top.join(clicks.with_columns(pl.lit(1).alias("hit")), on=["request_id", "restaurant_id"], how="left") \
        .group_by("request_id").agg(pl.col("hit").fill_null(0).sum().alias("clicks"), pl.len().alias("shown"))
    return answers.join(hits, on="request_id", how="left").with_columns(
        pl.col("clicks").fill_null(0), pl.col("shown").fill_null(0),
        (pl.col("clicks") / pl.col("shown")).alias("ctr"))


def _arm(rows: pl.DataFrame, errors: int = 0) -> Arm:
    """One arm's figures; CTR@k per user (the mean of the user's requests), then its mean and
    variance over users."""
    per_user = rows.filter(pl.col("shown") > 0).group_by("user_id").agg(pl.col("ctr").mean())
    ctr = per_user.get_column("ctr").to_numpy()
    n = len(ctr)
    latency = rows.get_column("latency_us").to_numpy()
    return Arm(requests=len(rows), users=n, ctr=float(ctr.mean()) if n else float("nan"),
               variance=float(ctr.var(ddof=1)) if n > 1 else float("nan"),
               clicks=int(rows["clicks"].sum()), impressions=int(rows["shown"].sum()),
               p95_ms=float(np.quantile(latency, 0.95)) / 1000 if len(latency) else float("nan"), errors=errors)


def judge(answers: pl.DataFrame, clicks: pl.DataFrame, champion_version: str, challenger_version: str,
          policy: Policy = Policy(), since: str = "") -> Verdict:
    """The verdict on the challenger (export version ``challenger_version``) against the champion
    (export ``champion_version``) over ``answers`` and their ``clicks`` (see the module docstring)."""
    rows = per_request(answers, clicks, policy.k)
    canary = rows.filter(pl.col("canary"))
    challenger_rows = canary.filter(pl.col("model_version") == challenger_version)
    failed = len(canary) - len(challenger_rows)  # canary requests the champion had to answer
    champion_rows = rows.filter(~pl.col("canary") & (pl.col("model_version") == champion_version))
    ours, theirs = _arm(challenger_rows, failed), _arm(champion_rows)
    verdict = Verdict("wait", [], theirs, ours, since=since)
    if ours.users < 2 or theirs.users < 2 or math.isnan(ours.variance) or math.isnan(theirs.variance):
        verdict.reasons.append(f"{ours.requests} canary and {theirs.requests} champion requests logged so far "
                               f"({ours.users} and {theirs.users} users)")
        return verdict
    se = math.sqrt(ours.variance / ours.users + theirs.variance / theirs.users) or 1e-12
    verdict.difference = ours.ctr - theirs.ctr
    verdict.lower = verdict.difference - NormalDist().inv_cdf(policy.confidence) * se
    verdict.upper = verdict.difference + NormalDist().inv_cdf(policy.rollback_confidence) * se
    worse = []
    if verdict.upper < 0:
        worse.append(f"CTR@{policy.k} clearly worse: upper bound {verdict.upper:+.4f} < 0 at "
                     f"{policy.rollback_confidence:.0%}")
    if ours.errors >= policy.min_errors and ours.error_rate > policy.max_error_rate:
        worse.append(f"error rate {ours.error_rate:.4f} > {policy.max_error_rate} ({ours.errors} errors)")
    latency_bound = theirs.p95_ms * policy.latency_ratio + policy.latency_slack_ms
    if min(ours.requests, theirs.requests) >= policy.min_latency_requests and ours.p95_ms > latency_bound:
        worse.append(f"p95 latency {ours.p95_ms:.2f} ms > {latency_bound:.2f} ms (the champion's "
                     f"{theirs.p95_ms:.2f} × {policy.latency_ratio} + {policy.latency_slack_ms})")
    if worse:
        verdict.action, verdict.reasons = "rollback", worse
    elif ours.requests < policy.min_requests:
        verdict.reasons.append(f"{ours.requests} of {policy.min_requests} canary requests")
    elif verdict.lower > -policy.margin:
        verdict.action = "promote"
        verdict.reasons.append(f"CTR@{policy.k} not worse by more than {policy.margin}: lower bound "
                               f"{verdict.lower:+.4f} at {policy.confidence:.0%}; errors and latency within bounds")
    else:
        verdict.reasons.append(f"lower bound {verdict.lower:+.4f} ≤ −{policy.margin}: not yet shown not worse")
    return verdict
