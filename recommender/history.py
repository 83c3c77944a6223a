"""Event history with times, for models that learn what happens *next* (the propensity model).

An :class:`EventHistory` is what the pipeline knows at ``as_of``: the events (with their types and
times), the event-type weights and half-life that build interaction matrices, which event types count
as positive, and optionally the holdings (customer_id, product_id, since[, until]). Nothing after
``as_of`` is ever read. :func:`activity` turns it into per-customer activity arrays as of any earlier
time, which is how a model builds a training snapshot (features at ``t``, outcomes in ``[t, as_of)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl
import scipy.sparse as sp

from recommender.columns import Columns
from recommender.idmap import IdMap
from recommender.interactions import build_interactions

_US_PER_DAY = 86_400e6


@dataclass(frozen=True)
class EventHistory:
    events: pl.LazyFrame  # customer_id, product_id, event_type, event_time
    weights: Mapping[str, float]
    half_life_days: float | None
    positive: tuple[str, ...]
    as_of: datetime
    holdings: pl.DataFrame | None = None  # customer_id, product_id, since, until (optional column)


@dataclass(frozen=True)
class Activity:
    """Per-customer activity as of ``at`` (rows follow ``customers``, offer columns follow ``offers``)."""

    weights: sp.csr_matrix  # (n, m) decayed interaction weights
    held: sp.csr_matrix  # (n, m) bool, products held at ``at``
    family_days_since: np.ndarray  # (n, n_families) float32 days since the last event of the family, NaN if none
    family_recent: np.ndarray  # (n, n_families) float32 events of the family in the last ``recent_days``


def held_at(holdings: pl.DataFrame | None, at: datetime) -> pl.DataFrame:
    """(customer_id, product_id) held at ``at``: since <= at and not closed by then."""
    if holdings is None or holdings.height == 0:
        return pl.DataFrame(schema={Columns.Customer: pl.String, Columns.Product: pl.String})
    held = holdings.filter(pl.col("since") <= at)
    if "until" in held.columns:
        held = held.filter(pl.col("until").is_null() | (pl.col("until") > at))
    return held.select(pl.col(Columns.Customer).cast(pl.String), pl.col(Columns.Product).cast(pl.String)).unique()


def pair_matrix(
    pairs: pl.DataFrame, customers: IdMap, offers: IdMap, *, column: str = Columns.Product
) -> sp.csr_matrix:
    """Boolean (customers x offers) matrix of ``pairs`` (ids outside the maps are dropped)."""
    rows = customers.to_internal(pairs[Columns.Customer], unknown="null")
    cols = offers.to_internal(pairs[column], unknown="null")
    ok = (rows >= 0) & (cols >= 0)
    matrix = sp.csr_matrix((np.ones(int(ok.sum()), bool), (rows[ok], cols[ok])), shape=(customers.size, offers.size))
    matrix.sum_duplicates()
    return matrix.astype(bool)


def activity(
    history: EventHistory,
    *,
    at: datetime,
    customers: IdMap,
    offers: IdMap,
    offer_family: np.ndarray,
    n_families: int,
    recent_days: float,
    with_weights: bool = True,
) -> Activity:
    """Activity as of ``at`` (<= ``history.as_of``) from events strictly before ``at``. ``with_weights=False``
    leaves the decayed weights out (an empty matrix): for a caller that already holds them (a model's training
    matrix as of ``history.as_of``), building them again is the costliest part."""
    if at > history.as_of:
        raise ValueError("activity after the history's as_of would look ahead")
    before = history.events.filter(pl.col(Columns.EventTime) < pl.lit(at).cast(pl.Datetime("us")))
    weights = (
        build_interactions(
            before,
            weights=history.weights,
            half_life_days=history.half_life_days,
            as_of=at,
            customers=customers,
            products=offers,
            unknown="skip",
        ).matrix
        if with_weights
        else sp.csr_matrix((customers.size, offers.size), dtype=np.float32)
    )
    cols = offers.frame(id_col=Columns.Product, index_col="_col").with_columns(
        pl.Series("_family", offer_family.astype(np.int64))
    )
    rows = customers.frame(id_col=Columns.Customer, index_col="_row")
    at_lit = pl.lit(at).cast(pl.Datetime("us"))
    per_family = (
        before.filter(pl.col(Columns.EventType).is_in(list(history.weights)))
        .select(Columns.Customer, Columns.Product, Columns.EventTime)
        .join(cols.lazy(), on=Columns.Product, how="inner")
        .join(rows.lazy(), on=Columns.Customer, how="inner")
        .group_by("_row", "_family")
        .agg(
            ((at_lit - pl.col(Columns.EventTime).max()).dt.total_microseconds() / _US_PER_DAY).alias("days"),
            (pl.col(Columns.EventTime) >= at_lit - pl.duration(days=recent_days)).sum().alias("recent"),
        )
        .collect()
    )
    n = customers.size
    days = np.full((n, n_families), np.nan, dtype=np.float32)
    recent = np.zeros((n, n_families), dtype=np.float32)
    r, f = per_family["_row"].to_numpy().astype(np.int64), per_family["_family"].to_numpy()
    days[r, f] = per_family["days"].to_numpy()
    recent[r, f] = per_family["recent"].to_numpy()
    held = pair_matrix(held_at(history.holdings, at), customers, offers)
    return Activity(weights=weights, held=held, family_days_since=days, family_recent=recent)


def positives_between(
    history: EventHistory, *, start: datetime, end: datetime, customers: IdMap, offers: IdMap
) -> sp.csr_matrix:
    """Boolean (customers x offers): a positive event in [start, end) (end <= history.as_of)."""
    if end > history.as_of:
        raise ValueError("positives after the history's as_of would look ahead")
    window = (
        history.events.filter(
            (pl.col(Columns.EventTime) >= pl.lit(start).cast(pl.Datetime("us")))
            & (pl.col(Columns.EventTime) < pl.lit(end).cast(pl.Datetime("us")))
            & pl.col(Columns.EventType).is_in(list(history.positive))
        )
        .select(pl.col(Columns.Customer).cast(pl.String), pl.col(Columns.Product).cast(pl.String))
        .unique()
        .collect()
    )
    return pair_matrix(window, customers, offers)
