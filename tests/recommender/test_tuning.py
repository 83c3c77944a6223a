"""Hyper-parameter search: defaults first, trial count and time budget honoured, champions per segment."""

from __future__ import annotations

import polars as pl
import pytest
from checkerboard import N_OFFERS, _offer, checkerboard

from recommender.columns import Columns
from recommender.errors import UserError
from recommender.interactions import InteractionMatrix
from recommender.tuning import Param, ValidationTask, parse_space, search, segment_champions


@pytest.fixture(scope="module")
def task():
    train, held_out, customers, offers = checkerboard()
    return ValidationTask(
        train=InteractionMatrix.from_frame(train),
        train_customers=customers,
        offers=offers,
        customers=customers,
        allowed=pl.DataFrame(
            {
                Columns.Segment: ["even"] * N_OFFERS + ["odd"] * N_OFFERS,
                Columns.Offer: [_offer(j) for j in range(N_OFFERS)] * 2,
            }
        ),
        held=train.select(Columns.Customer, Columns.Product),
        relevant=held_out,
        k=3,
    )


def test_first_trial_is_the_defaults_and_the_winner_is_no_worse(task):
    space = parse_space({"regularization": {"float": [0.1, 10000.0], "log": True}})
    result = search(task, name="ease", kind="ease", defaults={"regularization": 5000.0}, space=space, n_trials=4)
    assert [t.number for t in result.trials] == [0, 1, 2, 3]
    assert result.trials[0].params == {"regularization": 5000.0}
    assert result.best_value == max(t.value for t in result.trials) >= result.default_value
    assert 0.1 <= result.best_params["regularization"] <= 5000.0
    assert result.stopped_by == "trials"
    assert {row["segment"] for row in result.per_segment} == {"even", "odd"}


def test_budget_stops_before_a_trial_that_would_overrun(task):
    space = parse_space({"factors": {"int": [2, 8]}, "iterations": {"int": [5, 30]}})
    result = search(
        task,
        name="als",
        kind="als",
        defaults={"factors": 2, "iterations": 10},
        space=space,
        n_trials=50,
        budget_seconds=0.0,
    )
    assert len(result.trials) == 1 and result.stopped_by == "budget"


def test_search_space_errors_are_one_line():
    with pytest.raises(UserError, match="need low < high"):
        Param.from_spec("factors", {"int": [64, 8]})
    with pytest.raises(UserError, match="expected"):
        Param.from_spec("loss", {"values": ["warp"]})
    assert Param.from_spec("loss", {"choices": ["warp", "bpr"]}).choices == ("warp", "bpr")


def test_segment_champions_fall_back_below_minimum_support():
    per_segment = {
        "als": [{"segment": "young", "customers": 500, "ndcg": 0.30}, {"segment": "tiny", "customers": 5, "ndcg": 0.9}],
        "propensity": [
            {"segment": "young", "customers": 500, "ndcg": 0.25},
            {"segment": "tiny", "customers": 5, "ndcg": 0.1},
            {"segment": "senior", "customers": 300, "ndcg": 0.40},
        ],
    }
    overall = {"als": 0.28, "propensity": 0.31}
    champions = segment_champions(per_segment, overall=overall, metric="ndcg", min_customers=100)
    assert champions == {"*": "propensity", "young": "als", "tiny": "propensity", "senior": "propensity"}
