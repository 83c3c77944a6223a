"""``min_weight`` decides positives on undecayed event weights; a model version covers every input that shapes it."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl
import pytest

from recommender.columns import Columns
from recommender.idmap import IdMap
from recommender.interactions import build_interactions
from recommender.models import build_model

AS_OF = datetime(2026, 6, 1)
WEIGHTS = {"impression": 0.1, "application": 3.0}


def events() -> pl.DataFrame:
    """c0: an application two years ago (decayed to 0.044 with a 120-day half-life); c1: a fresh impression;
    c2, c3: fresh applications (so the models have something to learn)."""
    rows = [
        ("c0", "A", "application", AS_OF - timedelta(days=730)),
        ("c1", "A", "impression", AS_OF - timedelta(days=1)),
        ("c2", "A", "application", AS_OF - timedelta(days=2)),
        ("c3", "B", "application", AS_OF - timedelta(days=3)),
        ("c2", "B", "application", AS_OF - timedelta(days=5)),
    ]
    return pl.DataFrame(
        rows, schema=[Columns.Customer, Columns.Product, Columns.EventType, Columns.EventTime], orient="row"
    )


@pytest.mark.parametrize("path", ["dense", "frame"])
def test_strength_is_the_undecayed_weight_entry_for_entry(path):
    maps = {
        "customers": IdMap.from_sorted(pl.Series(["c0", "c1", "c2", "c3"])),
        "products": IdMap.from_sorted(pl.Series(["A", "B"])),
    }
    matrix = build_interactions(
        events(), weights=WEIGHTS, half_life_days=120, as_of=AS_OF, **(maps if path == "dense" else {})
    )
    assert matrix.strength is not None
    assert (matrix.strength.indptr == matrix.matrix.indptr).all() and (
        matrix.strength.indices == matrix.matrix.indices
    ).all()
    dense_weight, dense_strength = matrix.matrix.toarray(), matrix.strength.toarray()
    assert dense_weight[0, 0] == pytest.approx(3.0 * 0.5 ** (730 / 120), rel=1e-5) and dense_weight[0, 0] < 0.5
    assert dense_strength[0, 0] == pytest.approx(3.0)
    assert dense_strength[1, 0] == pytest.approx(0.1) and dense_strength[2, 1] == pytest.approx(3.0)


@pytest.mark.parametrize(
    "kind, params", [("bpr", {"factors": 2, "iterations": 5}), ("lightfm", {"no_components": 2, "epochs": 2})]
)
def test_an_old_application_is_still_a_positive_an_impression_is_not(kind, params):
    matrix = build_interactions(
        events(),
        weights=WEIGHTS,
        half_life_days=120,
        as_of=AS_OF,
        customers=IdMap.from_sorted(pl.Series(["c0", "c1", "c2", "c3"])),
        products=IdMap.from_sorted(pl.Series(["A", "B"])),
    )
    model = build_model(kind, {**params, "min_weight": 0.5}).fit(matrix)
    # used to be [False, False, True, True]: min_weight compared the decayed weight, so c0 looked cold
    assert model.is_warm(["c0", "c1", "c2", "c3"]).tolist() == [True, False, True, True]


def test_the_version_changes_with_the_segments_the_model_was_trained_under():
    matrix = build_interactions(events(), weights=WEIGHTS, half_life_days=120, as_of=AS_OF)
    customers = pl.DataFrame({Columns.Customer: ["c0", "c1", "c2", "c3"], Columns.Segment: ["s1", "s1", "s2", "s2"]})
    regrouped = customers.with_columns(pl.lit("s1").alias(Columns.Segment))
    one, same, other = (
        build_model("popularity", {"by_segment": True}).fit(matrix, customers=c)
        for c in (customers, customers, regrouped)
    )
    digest = lambda model: model.version.rsplit("-", 1)[1]  # noqa: E731 - <kind>-<time>-<digest>
    assert digest(one) == digest(same) and digest(one) != digest(other)
