"""top_k and rank_within_segments on hand-made scores (popularity model with known counts)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from recommender.columns import Columns
from recommender.errors import UserError
from recommender.interactions import InteractionMatrix
from recommender.models import build_model
from recommender.ranking import TIE_TOLERANCE, rank_within_segments, top_k


def test_top_k_orders_filters_and_breaks_ties_by_column():
    scores = np.array([[0.1, 0.9, 0.5, 0.9], [3.0, 2.0, 1.0, 0.0]], dtype=np.float32)
    candidates = np.array([[True, True, True, True], [False, True, False, False]])
    rows, cols, vals, ranks = top_k(scores, candidates, 3)
    assert rows.tolist() == [0, 0, 0, 1]
    assert cols.tolist() == [1, 3, 2, 1]  # tie 0.9/0.9 -> lower column first
    assert vals.tolist() == pytest.approx([0.9, 0.9, 0.5, 2.0], rel=TIE_TOLERANCE)  # rounded by tie_round
    assert ranks.tolist() == [1, 2, 3, 1]


def test_top_k_ties_at_the_kth_place_go_to_the_lower_column():
    rng = np.random.default_rng(5)
    scores = rng.integers(0, 4, size=(400, 40)).astype(np.float32)  # many ties, also at the k-th place
    candidates = rng.random((400, 40)) < 0.8
    rows, cols, vals, ranks = top_k(scores, candidates, 5)
    expected = [
        sorted((j for j in range(40) if candidates[i, j]), key=lambda j: (-scores[i, j], j))[:5] for i in range(400)
    ]
    got = [cols[rows == i].tolist() for i in range(400)]
    assert got == expected
    assert vals.tolist() == [float(scores[i, j]) for i, j in zip(rows, cols)]


def test_top_k_with_k_above_catalogue():
    rows, cols, _, ranks = top_k(np.array([[1.0, 2.0]]), np.array([[True, True]]), 5)
    assert cols.tolist() == [1, 0] and ranks.tolist() == [1, 2]


@pytest.fixture()
def popularity():
    # Global popularity: o1 (3 customers) > o2 (2) > o3 (1); o4 never seen but in the catalogue.
    frame = pl.DataFrame(
        {
            Columns.Customer: ["a", "b", "c", "a", "b", "a"],
            Columns.Product: ["o1", "o1", "o1", "o2", "o2", "o3"],
            Columns.Weight: [1.0] * 6,
        }
    )
    from recommender.idmap import IdMap

    matrix = InteractionMatrix.from_frame(
        frame, products=IdMap.from_sorted(pl.Series(["o1", "o2", "o3", "o4"]), name=Columns.Product)
    )
    return build_model("popularity", {"by_segment": False}).fit(matrix)


def test_rank_within_segments_known_answer(popularity):
    customers = pl.DataFrame({Columns.Customer: ["a", "z", "q"], Columns.Segment: ["s1", "s2", "nowhere"]})
    allowed = pl.DataFrame(
        {Columns.Segment: ["s1", "s1", "s1", "s2", "s2"], Columns.Offer: ["o1", "o2", "o4", "o2", "o3"]}
    )
    held = pl.DataFrame({Columns.Customer: ["a"], Columns.Product: ["o1"]})
    recs = rank_within_segments(popularity, customers=customers, allowed=allowed, held=held, k=2)
    assert recs.columns == [Columns.Customer, Columns.Segment, Columns.Offer, Columns.Score, Columns.Rank]
    assert recs.select(Columns.Customer, Columns.Offer, Columns.Rank).rows() == [
        ("a", "o2", 1),
        ("a", "o4", 2),  # o1 held; o4 unseen scores 0 but is still a candidate
        ("z", "o2", 1),
        ("z", "o3", 2),  # cold customer "z" ranked by popularity
    ]
    assert recs[Columns.Score].dtype == pl.Float32


def test_unknown_offers_follow_policy(popularity):
    customers = pl.DataFrame({Columns.Customer: ["a"], Columns.Segment: ["s1"]})
    allowed = pl.DataFrame({Columns.Segment: ["s1", "s1"], Columns.Offer: ["o1", "NEW"]})
    with pytest.raises(UserError, match="NEW"):
        rank_within_segments(popularity, customers=customers, allowed=allowed, k=2, unknown_offers="raise")
    with pytest.warns(UserWarning, match="cannot score"):
        recs = rank_within_segments(popularity, customers=customers, allowed=allowed, k=2)
    assert recs[Columns.Offer].to_list() == ["o1"]


def test_bad_arguments_are_user_errors(popularity):
    with pytest.raises(UserError, match="segment"):
        rank_within_segments(
            popularity,
            customers=pl.DataFrame({Columns.Customer: ["a"]}),
            allowed=pl.DataFrame({Columns.Segment: [], Columns.Offer: []}),
            k=1,
        )
    with pytest.raises(UserError, match="k must"):
        rank_within_segments(
            popularity,
            customers=pl.DataFrame({Columns.Customer: ["a"], Columns.Segment: ["s"]}),
            allowed=pl.DataFrame({Columns.Segment: ["s"], Columns.Offer: ["o1"]}),
            k=0,
        )
