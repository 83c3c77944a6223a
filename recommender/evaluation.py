"""Offline evaluation: time-based split and ranking metrics (precision, recall, MAP, NDCG @k, coverage).

Metrics are computed from two frames: recommendations (customer_id, offer_id, rank) and the relevant
pairs (customer_id, offer_id). Every customer with at least one relevant pair counts, including
customers who got no recommendation (they score zero), so dropping cold customers cannot flatter a model.

Definitions (binary relevance, ``R`` = relevant set, ``hit_i`` = rank i is relevant):
precision@k = hits / k; recall@k = hits / |R|; AP@k = sum_i hit_i * precision@i / min(|R|, k);
NDCG@k = sum_i hit_i / log2(i + 1) divided by the ideal DCG of min(|R|, k) hits; coverage = distinct
recommended offers / catalogue size.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl

from recommender.columns import Columns

METRICS = ("precision", "recall", "map", "ndcg")


@dataclass(frozen=True)
class TimeSplit:
    """Events before ``cutoff`` for training; positive (customer, product) pairs at or after it for testing."""

    train_events: pl.LazyFrame
    test_pairs: pl.DataFrame  # customer_id, offer_id
    cutoff: datetime


def time_split(
    events: pl.LazyFrame | pl.DataFrame, *, cutoff: datetime, positive: Iterable[str], horizon_days: float | None = None
) -> TimeSplit:
    """Train on events strictly before ``cutoff``; test on positive events in [cutoff, cutoff + horizon)."""
    lf = events.lazy()
    cut = pl.lit(cutoff).cast(pl.Datetime("us"))
    test = lf.filter((pl.col(Columns.EventTime) >= cut) & pl.col(Columns.EventType).is_in(list(positive)))
    if horizon_days is not None:
        test = test.filter(pl.col(Columns.EventTime) < cut + pl.duration(days=horizon_days))
    pairs = (
        test.select(
            pl.col(Columns.Customer).cast(pl.String), pl.col(Columns.Product).cast(pl.String).alias(Columns.Offer)
        )
        .unique()
        .sort(Columns.Customer, Columns.Offer)
        .collect()
    )
    return TimeSplit(train_events=lf.filter(pl.col(Columns.EventTime) < cut), test_pairs=pairs, cutoff=cutoff)


@dataclass(frozen=True)
class EvaluationResult:
    k: int
    overall: dict[str, float]  # metric -> value, plus "customers" and "coverage"
    per_segment: pl.DataFrame = field(default_factory=pl.DataFrame)  # segment, customers, metrics

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "overall": self.overall, "per_segment": self.per_segment.to_dicts()}


def per_customer_metrics(recs: pl.DataFrame, relevant: pl.DataFrame, *, k: int) -> pl.DataFrame:
    """One row per customer with a relevant pair: n_relevant, hits and the four metrics at ``k``."""
    truth = relevant.select(pl.col(Columns.Customer).cast(pl.String), pl.col(Columns.Offer).cast(pl.String)).unique()
    n_rel = truth.group_by(Columns.Customer).agg(pl.len().alias("n_relevant"))
    top = recs.filter(pl.col(Columns.Rank) <= k).select(
        pl.col(Columns.Customer).cast(pl.String), pl.col(Columns.Offer).cast(pl.String), Columns.Rank
    )
    hits = top.join(truth.with_columns(pl.lit(True).alias("_hit")), on=[Columns.Customer, Columns.Offer], how="inner")
    hits = hits.sort(Columns.Customer, Columns.Rank).with_columns(
        pl.int_range(1, pl.len() + 1).over(Columns.Customer).alias("_hits_so_far")
    )
    per = hits.group_by(Columns.Customer).agg(
        pl.len().alias("hits"),
        (pl.col("_hits_so_far") / pl.col(Columns.Rank)).sum().alias("_ap_sum"),
        (1.0 / (pl.col(Columns.Rank) + 1).log(2)).sum().alias("_dcg"),
    )
    ideal = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))])
    out = n_rel.join(per, on=Columns.Customer, how="left").with_columns(
        pl.col("hits").fill_null(0), pl.col("_ap_sum").fill_null(0.0), pl.col("_dcg").fill_null(0.0)
    )
    capped = pl.min_horizontal(pl.col("n_relevant"), pl.lit(k))
    idcg = pl.lit(pl.Series("idcg", ideal)).gather(capped)
    return out.with_columns(
        (pl.col("hits") / k).alias("precision"),
        (pl.col("hits") / pl.col("n_relevant")).alias("recall"),
        (pl.col("_ap_sum") / capped).alias("map"),
        (pl.col("_dcg") / idcg).alias("ndcg"),
    ).drop("_ap_sum", "_dcg")


def evaluate(
    recs: pl.DataFrame, relevant: pl.DataFrame, *, k: int, catalogue_size: int, segments: pl.DataFrame | None = None
) -> EvaluationResult:
    """Mean metrics over customers with relevant pairs, overall and per segment (``segments``:
    customer_id, segment; customers without one fall in segment "(none)")."""
    per = per_customer_metrics(recs, relevant, k=k)
    top = recs.filter(pl.col(Columns.Rank) <= k)
    coverage = top[Columns.Offer].n_unique() / catalogue_size if catalogue_size else 0.0
    overall = {m: _number(per[m].mean()) if per.height else 0.0 for m in METRICS}
    overall["customers"] = per.height
    overall["coverage"] = coverage
    per_segment = pl.DataFrame()
    if segments is not None:
        labelled = per.join(
            segments.select(pl.col(Columns.Customer).cast(pl.String), pl.col(Columns.Segment).cast(pl.String)),
            on=Columns.Customer,
            how="left",
        ).with_columns(pl.col(Columns.Segment).fill_null("(none)"))
        seg_cov = (
            top.join(
                segments.select(pl.col(Columns.Customer).cast(pl.String), Columns.Segment),
                on=Columns.Customer,
                how="left",
            )
            .group_by(Columns.Segment)
            .agg((pl.col(Columns.Offer).n_unique() / max(catalogue_size, 1)).alias("coverage"))
        )
        per_segment = (
            labelled.group_by(Columns.Segment)
            .agg(pl.len().alias("customers"), *[pl.col(m).mean() for m in METRICS])
            .join(seg_cov, on=Columns.Segment, how="left")
            .with_columns(pl.col("coverage").fill_null(0.0))
            .sort(Columns.Segment)
        )
    return EvaluationResult(k=k, overall=overall, per_segment=per_segment)


def graded_ndcg(recs: pl.DataFrame, gains: pl.DataFrame, *, k: int) -> dict[str, float]:
    """NDCG@k with graded gains (customer_id, offer_id, gain >= 0) over each customer's candidate set,
    and the share of the best achievable total gain the top-k reaches (``gain_ratio``). Used against a
    known ground truth, where every candidate has a true value."""
    g = gains.select(pl.col(Columns.Customer).cast(pl.String), pl.col(Columns.Offer).cast(pl.String), "gain")
    ideal = (
        g.sort([Columns.Customer, "gain"], descending=[False, True])
        .with_columns(pl.int_range(1, pl.len() + 1).over(Columns.Customer).alias("_pos"))
        .filter(pl.col("_pos") <= k)
        .group_by(Columns.Customer)
        .agg(
            (pl.col("gain") / (pl.col("_pos") + 1).log(2)).sum().alias("idcg"), pl.col("gain").sum().alias("ideal_gain")
        )
    )
    got = (
        recs.filter(pl.col(Columns.Rank) <= k)
        .select(pl.col(Columns.Customer).cast(pl.String), pl.col(Columns.Offer).cast(pl.String), Columns.Rank)
        .join(g, on=[Columns.Customer, Columns.Offer], how="left")
        .with_columns(pl.col("gain").fill_null(0.0))
        .group_by(Columns.Customer)
        .agg(
            (pl.col("gain") / (pl.col(Columns.Rank) + 1).log(2)).sum().alias("dcg"),
            pl.col("gain").sum().alias("total_gain"),
        )
    )
    joined = ideal.join(got, on=Columns.Customer, how="left").fill_null(0.0).filter(pl.col("idcg") > 0)
    return {
        "ndcg": _number((joined["dcg"] / joined["idcg"]).mean()) if joined.height else 0.0,
        "gain_ratio": _number(joined["total_gain"].sum()) / _number(joined["ideal_gain"].sum())
        if joined.height
        else 0.0,
        "mean_gain": _number((joined["total_gain"] / k).mean()) if joined.height else 0.0,
        "customers": joined.height,
    }


def _number(value: object) -> float:
    """A Polars aggregate of a numeric column (typed as any Python literal) as a float."""
    if not isinstance(value, int | float):
        raise TypeError(f"expected a number from a numeric column, got {value!r}")
    return float(value)
