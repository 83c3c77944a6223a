"""The ``uplift`` arm strategy: a campaign :class:`~campaigns.campaign_run.Ranker` that scores each customer by the
incremental conversion a contact is predicted to cause, times the margin of the offer the ranking model chose.

For the customers of the arm's share, the ranking model ranks the offers as usual (that choice of offer is
kept); the uplift model predicts the uplift of every ranked (customer, offer) pair from the customer's features
as of the run's fire time; the pair's value is ``uplift x margin``. The returned scores keep the ranking model's
order within each customer (a running minimum along its ranks, minus a hair per rank) so the allocation's greedy
walk takes each customer's offers in the ranking model's order and ranks *customers* by the value of their
first offer. Give the arm ``min_score = 0`` to never contact customers whom a contact is predicted to put off.

Plugging in as a Ranker keeps :func:`campaigns.campaign_run.plan_campaign` unchanged: arms are split first, so the
uplift arm is one more random share and every randomised comparison of the report stays valid.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from campaigns.contracts import World
from campaigns.specs import UPLIFT_STRATEGY
from campaigns.uplift.history import customer_features, model_features, pair_features
from recommender.columns import Columns

if TYPE_CHECKING:
    from campaigns.uplift.models import UpliftModel

RANK_STEP = 1e-9  # relative decrease per rank that keeps the ranking model's order among equal values

BaseRank = Callable[..., pl.DataFrame]


def margins_of(products: pl.DataFrame, *, source: str) -> pl.DataFrame:
    """offer_id, margin: the products table's ``margin`` (missing -> 1) or 1 for every offer (``source="none"``)."""
    if source == "product" and "margin" in products.columns:
        margin = pl.col("margin").cast(pl.Float64).fill_null(1.0)
    else:
        margin = pl.lit(1.0)
    return products.select(pl.col("product_id").alias(Columns.Offer), margin.alias("margin"))


def value_scores(ranked: pl.DataFrame, value: np.ndarray) -> np.ndarray:
    """Scores that order customers by the value of their top-ranked offer and keep the ranking's order within a
    customer: the running minimum of ``value`` along the customer's ranks, minus ``RANK_STEP`` per rank."""
    frame = ranked.select(Columns.Customer, "rank").with_columns(
        pl.Series("value", value), pl.int_range(pl.len()).alias("_row")
    )
    ordered = frame.sort(Columns.Customer, "rank").with_columns(
        pl.col("value").cum_min().over(Columns.Customer).alias("floor")
    )
    floor = ordered["floor"].abs().to_numpy()
    scale = float(floor.max()) if floor.size and floor.max() > 0 else 1.0
    ordered = ordered.with_columns((pl.col("floor") - RANK_STEP * scale * (pl.col("rank") - 1)).alias("score"))
    return ordered.sort("_row")["score"].to_numpy()


def uplift_ranker(
    base: BaseRank,
    model: UpliftModel,
    *,
    ranking_strategy: str,
    world: World,
    as_of: datetime,
    margin: str = "product",
    threads: int = 1,
) -> BaseRank:
    """A ranker for the ``uplift`` strategy on top of ``base`` (which ranks with ``ranking_strategy``); other
    strategies pass straight through to ``base``."""
    margins = margins_of(world.products, source=margin)

    def rank(
        strategy: str, *, customers: pl.DataFrame, allowed: pl.DataFrame, held: pl.DataFrame, k: int
    ) -> pl.DataFrame:
        if strategy != UPLIFT_STRATEGY:
            return base(strategy, customers=customers, allowed=allowed, held=held, k=k)
        ranked = base(ranking_strategy, customers=customers, allowed=allowed, held=held, k=k)
        if ranked.height == 0:
            return ranked
        features = customer_features(world, customers, as_of=as_of)
        pairs = pair_features(features, ranked, world.products)
        uplift = model.predict(model_features(pairs), threads=threads)
        value = (
            uplift
            * ranked.select(Columns.Offer)
            .join(margins, on=Columns.Offer, how="left", maintain_order="left")["margin"]
            .fill_null(1.0)
            .to_numpy()
        )
        return ranked.with_columns(
            pl.Series("score", value_scores(ranked, value)), pl.Series("predicted_uplift", uplift)
        )

    return rank
