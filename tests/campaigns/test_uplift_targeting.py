"""The uplift strategy's scores keep the ranking model's offer order within a customer and rank customers by
the value (uplift x margin) of their first offer; margins come from the products table or are 1."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from campaigns.allocation import allocate
from campaigns.uplift.targeting import margins_of, value_scores

ranked_lists = st.lists(
    st.lists(st.floats(-1, 1, allow_nan=False, width=32), min_size=1, max_size=4), min_size=1, max_size=12
)


@settings(max_examples=150, deadline=None)
@given(ranked_lists)
def test_scores_follow_rank_within_customer_and_first_offer_across(values_per_customer):
    rows = [(f"c{i:02d}", f"o{r}", r + 1, v) for i, vals in enumerate(values_per_customer) for r, v in enumerate(vals)]
    frame = pl.DataFrame(rows, schema=["customer_id", "offer_id", "rank", "value"], orient="row").sample(
        fraction=1.0, shuffle=True, seed=1
    )
    scores = value_scores(frame.select("customer_id", "offer_id", "rank"), frame["value"].to_numpy())
    got = frame.with_columns(pl.Series("score", scores))
    for i, vals in enumerate(values_per_customer):
        mine = got.filter(pl.col("customer_id") == f"c{i:02d}").sort("rank")["score"].to_list()
        assert all(a > b for a, b in zip(mine, mine[1:]))  # the ranking model's order, strictly
        assert mine[0] == vals[0]  # the first offer scores its own value
    # with one offer per customer and an audience cap, allocation takes the customers whose first offer is worth most
    cap = max(1, len(values_per_customer) // 2)
    chosen = allocate(
        got.select("customer_id", "offer_id", "score"),
        offers_per_customer=1,
        capacity={},
        max_audience=cap,
        min_score=None,
    ).selected
    firsts = sorted((vals[0], f"c{i:02d}") for i, vals in enumerate(values_per_customer))
    threshold = sorted((v for v, _ in firsts), reverse=True)[cap - 1]
    assert all(
        got.filter((pl.col("customer_id") == c) & (pl.col("rank") == 1))["score"][0] >= threshold
        for c in chosen["customer_id"]
    )
    assert all(row[1] == "o0" for row in chosen.select("customer_id", "offer_id").iter_rows())


def test_margins_from_products_or_one():
    products = pl.DataFrame({"product_id": ["A", "B"], "margin": [120.0, None]})
    assert margins_of(products, source="product").rows() == [("A", 120.0), ("B", 1.0)]
    assert margins_of(products, source="none")["margin"].to_list() == [1.0, 1.0]
    assert margins_of(products.drop("margin"), source="product")["margin"].to_list() == [1.0, 1.0]
