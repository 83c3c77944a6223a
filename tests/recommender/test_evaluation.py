"""Ranking metrics on hand-computed examples; time split without leakage."""

from __future__ import annotations

import math
from datetime import datetime

import polars as pl
import pytest

from recommender.columns import Columns
from recommender.evaluation import evaluate, graded_ndcg, per_customer_metrics, time_split

RECS = pl.DataFrame(
    {
        Columns.Customer: ["a"] * 3 + ["b"] * 3,
        Columns.Offer: ["x", "y", "z", "x", "y", "z"],
        Columns.Rank: [1, 2, 3] * 2,
    }
)
RELEVANT = pl.DataFrame({Columns.Customer: ["a", "a", "b", "c"], Columns.Offer: ["y", "q", "x", "x"]})


def test_per_customer_metrics_by_hand():
    per = {r[Columns.Customer]: r for r in per_customer_metrics(RECS, RELEVANT, k=3).iter_rows(named=True)}
    # a: relevant {y, q}; one hit at rank 2.
    assert per["a"]["precision"] == pytest.approx(1 / 3)
    assert per["a"]["recall"] == pytest.approx(1 / 2)
    assert per["a"]["map"] == pytest.approx((1 / 2) / 2)
    assert per["a"]["ndcg"] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    # b: hit at rank 1 of its only relevant offer. c: no recommendations at all -> zeros, still counted.
    assert (per["b"]["map"], per["b"]["ndcg"], per["b"]["recall"]) == (1.0, 1.0, 1.0)
    assert (per["c"]["precision"], per["c"]["ndcg"]) == (0.0, 0.0)


def test_evaluate_overall_coverage_and_segments():
    result = evaluate(
        RECS,
        RELEVANT,
        k=2,
        catalogue_size=4,
        segments=pl.DataFrame({Columns.Customer: ["a", "b", "c"], Columns.Segment: ["s1", "s1", "s2"]}),
    )
    assert result.overall["customers"] == 3
    assert result.overall["precision"] == pytest.approx((1 / 2 + 1 / 2 + 0) / 3)
    assert result.overall["coverage"] == pytest.approx(2 / 4)  # x and y within the top 2
    seg = {r[Columns.Segment]: r for r in result.per_segment.iter_rows(named=True)}
    assert seg["s1"]["customers"] == 2 and seg["s2"]["ndcg"] == 0.0
    assert result.to_dict()["per_segment"][0][Columns.Segment] == "s1"


def test_graded_ndcg_perfect_and_reversed():
    gains = pl.DataFrame({Columns.Customer: ["a"] * 3, Columns.Offer: ["x", "y", "z"], "gain": [3.0, 2.0, 1.0]})
    perfect = graded_ndcg(RECS.filter(pl.col(Columns.Customer) == "a"), gains, k=2)
    assert perfect["ndcg"] == pytest.approx(1.0) and perfect["gain_ratio"] == pytest.approx(1.0)
    reverse = RECS.filter(pl.col(Columns.Customer) == "a").with_columns((4 - pl.col(Columns.Rank)).alias(Columns.Rank))
    worst = graded_ndcg(reverse, gains, k=2)
    ideal = 3 + 2 / math.log2(3)
    assert worst["ndcg"] == pytest.approx((1 + 2 / math.log2(3)) / ideal)
    assert worst["gain_ratio"] == pytest.approx(3 / 5)


def test_time_split_separates_train_and_positive_test_events():
    t = datetime(2026, 6, 1)
    events = pl.DataFrame(
        {
            Columns.Customer: ["a", "a", "b", "b", "c"],
            Columns.Product: ["p1", "p2", "p1", "p3", "p2"],
            Columns.EventType: ["click", "application", "impression", "activation", "activation"],
            Columns.EventTime: [
                datetime(2026, 5, 1),
                datetime(2026, 6, 2),
                datetime(2026, 6, 3),
                datetime(2026, 6, 1),
                datetime(2026, 9, 1),
            ],
        }
    )
    split = time_split(events, cutoff=t, positive=["application", "activation"], horizon_days=60)
    assert split.train_events.collect()[Columns.Product].to_list() == ["p1"]
    assert split.test_pairs.rows() == [("a", "p2"), ("b", "p3")]  # impression is not positive; c is past horizon
