"""Attribution on tiny hand-written tables with known answers."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl
import pytest

from campaigns.attribution import (
    ANY_PRODUCT,
    OFFERED_FAMILY,
    OFFERED_PRODUCT,
    AttributionError,
    attribute,
    cumulative_conversions,
    summarise,
)

T0 = datetime(2026, 3, 1, 9, 0)
PRODUCTS = pl.DataFrame(
    {
        "product_id": ["CC_GOLD", "CC_PLAT", "PL_5K", "DEP_FIX"],
        "family": ["credit_card", "credit_card", "personal_loan", "deposit"],
    }
)
# a, b treated; c, d control; a was offered two credit cards.
ASSIGNMENTS = pl.DataFrame(
    {
        "customer_id": ["a", "a", "b", "c", "d"],
        "arm": ["treatment", "treatment", "treatment", "control", "control"],
        "segment": ["young", "young", "old", "young", "old"],
        "offer_id": ["CC_GOLD", "CC_PLAT", "PL_5K", "CC_GOLD", "PL_5K"],
        "exposed_at": [T0] * 5,
    }
)


def _conversions(rows: list[tuple[str, str, datetime | None, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={
            "customer_id": pl.String,
            "product_id": pl.String,
            "converted_at": pl.Datetime("us"),
            "amount": pl.Float64,
        },
        orient="row",
    )


def _flags(outcomes, metric: str) -> dict[str, bool]:
    return dict(zip(outcomes.customers["customer_id"], outcomes.customers[f"{metric}_converted"]))


def test_window_is_after_exposure_and_at_most_window_days():
    conversions = _conversions(
        [
            ("a", "CC_GOLD", T0, 1.0),  # at exposure time: not after it
            ("b", "PL_5K", T0 - timedelta(days=1), 1.0),  # before
            ("c", "CC_GOLD", T0 + timedelta(days=30), 1.0),  # last instant of a 30-day window
            ("d", "PL_5K", T0 + timedelta(days=30, seconds=1), 1.0),  # just outside
        ]
    )
    outcomes = attribute(ASSIGNMENTS, conversions, window_days=30, products=PRODUCTS)
    assert _flags(outcomes, OFFERED_PRODUCT) == {"a": False, "b": False, "c": True, "d": False}
    unbounded = attribute(ASSIGNMENTS, conversions, window_days=None, products=PRODUCTS)
    assert _flags(unbounded, OFFERED_PRODUCT) == {"a": False, "b": False, "c": True, "d": True}


def test_offered_product_family_and_any_metrics():
    conversions = _conversions(
        [
            ("a", "CC_PLAT", T0 + timedelta(days=2), 100.0),  # second offer of a: product and family
            ("b", "CC_GOLD", T0 + timedelta(days=3), 50.0),  # not b's offer family: any only
            ("c", "CC_PLAT", T0 + timedelta(days=1), 70.0),  # control: family of its (held-back) offer
            ("d", "DEP_FIX", T0 + timedelta(days=1), 5.0),  # organic to another family
            ("zz", "CC_GOLD", T0 + timedelta(days=1), 9.0),  # not assigned: ignored
        ]
    )
    outcomes = attribute(ASSIGNMENTS, conversions, window_days=30, products=PRODUCTS)
    assert outcomes.metrics == (OFFERED_PRODUCT, OFFERED_FAMILY, ANY_PRODUCT)
    assert _flags(outcomes, OFFERED_PRODUCT) == {"a": True, "b": False, "c": False, "d": False}
    assert _flags(outcomes, OFFERED_FAMILY) == {"a": True, "b": False, "c": True, "d": False}
    assert _flags(outcomes, ANY_PRODUCT) == {"a": True, "b": True, "c": True, "d": True}
    stats = summarise(outcomes, OFFERED_FAMILY)
    assert stats.rows(named=True) == [
        {"arm": "control", "n": 2, "conversions": 1, "revenue_sum": 70.0, "revenue_sum_squares": 4900.0},
        {"arm": "treatment", "n": 2, "conversions": 1, "revenue_sum": 100.0, "revenue_sum_squares": 10000.0},
    ]


def test_one_conversion_matching_two_offers_of_a_family_counts_once():
    conversions = _conversions(
        [("a", "CC_GOLD", T0 + timedelta(hours=5), 40.0), ("a", "CC_GOLD", T0 + timedelta(hours=6), 2.0)]
    )
    outcomes = attribute(ASSIGNMENTS, conversions, window_days=30, products=PRODUCTS)
    row = outcomes.customers.filter(pl.col("customer_id") == "a").row(0, named=True)
    assert row["offered_family_revenue"] == 42.0  # a holds two credit-card offers; no double counting
    assert row["offered_product_revenue"] == 42.0
    assert row["offered_family_first_at"] == T0 + timedelta(hours=5)
    by_segment = summarise(outcomes, OFFERED_PRODUCT, by=("segment", "arm"))
    assert by_segment.select("segment", "arm", "n", "conversions").rows() == [
        ("old", "control", 1, 0),
        ("old", "treatment", 1, 0),
        ("young", "control", 1, 0),
        ("young", "treatment", 1, 1),
    ]


def test_without_times_or_products_every_listed_conversion_counts():
    assignments = pl.DataFrame({"customer_id": ["1", "2", "3"], "arm": ["x", "y", "y"]})
    conversions = pl.DataFrame({"customer_id": ["2", "2", "3", "99"]})
    outcomes = attribute(assignments, conversions, window_days=14)
    assert outcomes.metrics == (ANY_PRODUCT,)
    assert _flags(outcomes, ANY_PRODUCT) == {"1": False, "2": True, "3": True}
    assert outcomes.customers["segment"].unique().to_list() == ["(none)"]
    assert summarise(outcomes, ANY_PRODUCT).select("arm", "n", "conversions").rows() == [("x", 1, 0), ("y", 2, 2)]
    assert cumulative_conversions(outcomes, ANY_PRODUCT).height == 0


def test_customer_in_two_arms_is_rejected():
    bad = pl.concat(
        [
            ASSIGNMENTS,
            pl.DataFrame(
                {
                    "customer_id": ["a"],
                    "arm": ["control"],
                    "segment": ["young"],
                    "offer_id": ["PL_5K"],
                    "exposed_at": [T0],
                }
            ),
        ]
    )
    with pytest.raises(AttributionError, match="more than one arm.*'a'"):
        attribute(bad, _conversions([]))


def test_cumulative_conversions_by_day_since_exposure():
    conversions = _conversions(
        [
            ("a", "CC_GOLD", T0 + timedelta(days=0, hours=3), 1.0),
            ("b", "PL_5K", T0 + timedelta(days=2, hours=1), 1.0),
            ("b", "PL_5K", T0 + timedelta(days=5), 1.0),  # second conversion of b: b is already counted
            ("d", "PL_5K", T0 + timedelta(days=2, hours=23), 1.0),
        ]
    )
    timeline = cumulative_conversions(attribute(ASSIGNMENTS, conversions, window_days=30), OFFERED_PRODUCT)
    assert timeline.rows() == [("control", 2, 1, 1, 0.5), ("treatment", 0, 1, 1, 0.5), ("treatment", 2, 1, 2, 1.0)]
