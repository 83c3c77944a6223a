"""Conversion attribution: which assigned customers converted, per metric, inside the conversion window.

Plain Polars in, plain Polars out. ``assignments`` has one row per (customer, offer) of a run (control rows
included; they are attributed exactly like treated ones, so the comparison is like for like):
customer_id, arm and optionally segment, exposed_at (the run's generation time; a target list's
``generated_at`` is taken as such), offer_id, family.
``conversions`` needs only customer_id; product_id, converted_at, amount (and family) are optional.

A conversion counts for a customer when it happens strictly after exposed_at and at most ``window_days``
later; without exposed_at or converted_at every listed conversion counts. Metrics:

- ``offered_product``: converted to one of the offers the customer was assigned (needs offer_id and product_id);
- ``campaign_offer``: converted to any offer of the campaign (give ``campaign_offers``); defined for every
  customer of an audience, offered something or not, so it is the intention-to-treat metric;
- ``offered_family``: converted to any product of an assigned offer's family (needs families on both sides;
  give ``products`` (product_id, family) to look them up);
- ``any_product``: any conversion at all (always available).

:func:`summarise` then groups customer outcomes into per-arm sufficient statistics for :mod:`campaigns.stats`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import polars as pl

from campaigns.contracts import TIMESTAMP, ContractError, TableSpec
from campaigns.stats import ProportionStats, RevenueStats

OFFERED_PRODUCT = "offered_product"
CAMPAIGN_OFFER = "campaign_offer"
OFFERED_FAMILY = "offered_family"
ANY_PRODUCT = "any_product"
METRICS = (OFFERED_PRODUCT, CAMPAIGN_OFFER, OFFERED_FAMILY, ANY_PRODUCT)
NO_SEGMENT = "(none)"

ASSIGNMENTS = TableSpec(
    "assignments",
    required={"customer_id": pl.String(), "arm": pl.String()},
    optional={"segment": pl.String(), "exposed_at": TIMESTAMP, "offer_id": pl.String(), "family": pl.String()},
    non_null=("customer_id", "arm"),
)
CONVERSION_RECORDS = TableSpec(
    "conversions",
    required={"customer_id": pl.String()},
    optional={
        "product_id": pl.String(),
        "converted_at": TIMESTAMP,
        "amount": pl.Float64(),
        "channel": pl.String(),
        "family": pl.String(),
    },
    non_null=("customer_id",),
)


class AttributionError(ContractError):
    """Assignments or conversions cannot be attributed (e.g. a customer in two arms)."""


@dataclass(frozen=True)
class Outcomes:
    """One row per assigned customer: customer_id, arm, segment, exposed_at and, per metric m,
    ``m_converted`` (bool), ``m_revenue`` (sum of attributed amounts) and ``m_first_at`` (first conversion)."""

    customers: pl.DataFrame
    metrics: tuple[str, ...]
    window_days: float | None

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]


def _with_family(frame: pl.DataFrame, products: pl.DataFrame | None, id_column: str) -> pl.DataFrame:
    if "family" in frame.columns or products is None or id_column not in frame.columns:
        return frame
    lookup = products.select(pl.col("product_id").alias(id_column), pl.col("family").cast(pl.String)).unique(id_column)
    return frame.join(lookup, on=id_column, how="left")


def _customers(assignments: pl.DataFrame) -> pl.DataFrame:
    per_customer = assignments.group_by("customer_id").agg(
        pl.col("arm").n_unique().alias("_arms"),
        pl.col("arm").first(),
        pl.col("segment").drop_nulls().first()
        if "segment" in assignments.columns
        else pl.lit(None, pl.String).alias("segment"),
        pl.col("exposed_at").min()
        if "exposed_at" in assignments.columns
        else pl.lit(None, TIMESTAMP).alias("exposed_at"),
    )
    clash = per_customer.filter(pl.col("_arms") > 1).sort("customer_id")
    if clash.height:
        shown = ", ".join(repr(c) for c in clash["customer_id"].head(5))
        raise AttributionError(
            "assignments", "arm", f"customer assigned to more than one arm ({clash.height} customers, e.g. {shown})"
        )
    return per_customer.drop("_arms").with_columns(pl.col("segment").fill_null(NO_SEGMENT)).sort("customer_id")


def _in_window(window_days: float | None) -> pl.Expr:
    """Conversion after exposure and within the window; missing times mean 'counts'."""
    after = pl.col("converted_at") > pl.col("exposed_at")
    if window_days is not None:
        after = after & (pl.col("converted_at") <= pl.col("exposed_at") + timedelta(days=window_days))
    return (pl.col("converted_at").is_null() | pl.col("exposed_at").is_null() | after).fill_null(True)


def attribute(
    assignments: pl.DataFrame,
    conversions: pl.DataFrame,
    *,
    window_days: float | None = None,
    products: pl.DataFrame | None = None,
    campaign_offers: list[str] | None = None,
    metrics: tuple[str, ...] | None = None,
) -> Outcomes:
    """Attribute conversions to assigned customers for every metric the columns allow (or those of ``metrics``
    that they allow, in that order: the first is the primary metric)."""
    if assignments.height == 0:
        raise AttributionError("assignments", None, "no assigned customers")
    if "exposed_at" not in assignments.columns and "generated_at" in assignments.columns:
        assignments = assignments.rename({"generated_at": "exposed_at"})  # a target list's generation time
    assignments = _with_family(assignments, products, "offer_id")
    conversions = _with_family(conversions, products, "product_id")
    if "exposed_at" not in assignments.columns:
        assignments = assignments.with_columns(pl.lit(None, TIMESTAMP).alias("exposed_at"))
    conv = conversions.select(
        "customer_id",
        *(c for c in ("product_id", "family") if c in conversions.columns),
        pl.col("converted_at")
        if "converted_at" in conversions.columns
        else pl.lit(None, TIMESTAMP).alias("converted_at"),
        pl.col("amount").cast(pl.Float64).fill_null(0.0)
        if "amount" in conversions.columns
        else pl.lit(0.0).alias("amount"),
    ).with_row_index("_conversion")

    customers = _customers(assignments)
    matches: dict[str, pl.DataFrame] = {}
    offers = assignments.select(
        "customer_id", "exposed_at", *(c for c in ("offer_id", "family") if c in assignments.columns)
    )
    if "offer_id" in offers.columns and "product_id" in conv.columns:
        matches[OFFERED_PRODUCT] = conv.join(
            offers.drop("family", strict=False).unique(),
            left_on=["customer_id", "product_id"],
            right_on=["customer_id", "offer_id"],
            how="inner",
        )
    if "family" in offers.columns and "family" in conv.columns:
        matches[OFFERED_FAMILY] = conv.join(
            offers.select("customer_id", "family", "exposed_at").drop_nulls("family").unique(),
            on=["customer_id", "family"],
            how="inner",
        )
    if campaign_offers is not None and "product_id" in conv.columns:
        matches[CAMPAIGN_OFFER] = conv.filter(pl.col("product_id").is_in(list(campaign_offers))).join(
            customers.select("customer_id", "exposed_at"), on="customer_id", how="inner"
        )
    matches[ANY_PRODUCT] = conv.join(customers.select("customer_id", "exposed_at"), on="customer_id", how="inner")
    order = [m for m in (metrics or METRICS) if m in matches]
    if not order:
        raise AttributionError(
            "conversions", None, f"none of the metrics {list(metrics or METRICS)} can be computed from these columns"
        )
    matches = {m: matches[m] for m in order}

    for metric, matched in matches.items():
        per_customer = (
            matched.filter(_in_window(window_days))
            .unique("_conversion")  # one conversion matching several offers of a family counts once
            .group_by("customer_id")
            .agg(
                pl.lit(True).alias(f"{metric}_converted"),
                pl.col("amount").sum().alias(f"{metric}_revenue"),
                pl.col("converted_at").min().alias(f"{metric}_first_at"),
            )
        )
        customers = customers.join(per_customer, on="customer_id", how="left").with_columns(
            pl.col(f"{metric}_converted").fill_null(False), pl.col(f"{metric}_revenue").fill_null(0.0)
        )
    return Outcomes(customers, tuple(matches), window_days)


def summarise(outcomes: Outcomes, metric: str, *, by: tuple[str, ...] = ("arm",)) -> pl.DataFrame:
    """Sufficient statistics per group: n, conversions, revenue_sum, revenue_sum_squares."""
    revenue = pl.col(f"{metric}_revenue")
    return (
        outcomes.customers.group_by(*by)
        .agg(
            pl.len().alias("n"),
            pl.col(f"{metric}_converted").sum().alias("conversions"),
            revenue.sum().alias("revenue_sum"),
            (revenue * revenue).sum().alias("revenue_sum_squares"),
        )
        .sort(*by)
    )


def proportion_stats(summary: pl.DataFrame) -> ProportionStats:
    """The one row of a :func:`summarise` group as :class:`ProportionStats` (zeros when empty)."""
    if summary.height == 0:
        return ProportionStats(0, 0)
    row = summary.row(0, named=True)
    return ProportionStats(int(row["n"]), int(row["conversions"]))


def revenue_stats(summary: pl.DataFrame) -> RevenueStats:
    if summary.height == 0:
        return RevenueStats(0, 0.0, 0.0)
    row = summary.row(0, named=True)
    return RevenueStats(int(row["n"]), float(row["revenue_sum"]), float(row["revenue_sum_squares"]))


def cumulative_conversions(outcomes: Outcomes, metric: str) -> pl.DataFrame:
    """Cumulative conversion rate per arm by whole days since exposure (or by calendar day without exposure
    times): arm, day, conversions, cumulative_conversions, cumulative_rate. Empty without conversion times."""
    first = pl.col(f"{metric}_first_at")
    frame = outcomes.customers
    schema = pl.Schema(
        {
            "arm": pl.String(),
            "day": pl.Int64(),
            "conversions": pl.UInt32(),
            "cumulative_conversions": pl.UInt32(),
            "cumulative_rate": pl.Float64(),
        }
    )
    converted = frame.filter(first.is_not_null())
    if converted.height == 0:
        return pl.DataFrame(schema=schema)
    has_exposure = frame["exposed_at"].null_count() < frame.height
    start = pl.col("exposed_at") if has_exposure else pl.lit(converted[f"{metric}_first_at"].min()).dt.truncate("1d")
    sizes = frame.group_by("arm").agg(pl.len().alias("_n"))
    daily = (
        converted.with_columns(((first - start).dt.total_seconds() // 86_400).cast(pl.Int64).alias("day"))
        .group_by("arm", "day")
        .agg(pl.len().cast(pl.UInt32).alias("conversions"))
        .sort("arm", "day")
        .with_columns(pl.col("conversions").cum_sum().over("arm").alias("cumulative_conversions"))
        .join(sizes, on="arm")
        .with_columns((pl.col("cumulative_conversions") / pl.col("_n")).alias("cumulative_rate"))
        .drop("_n")
    )
    return daily.select(list(schema)).cast(schema)
