"""`evaluate_models` compares every model with the best popularity model by a paired bootstrap."""

from __future__ import annotations

from pathlib import Path

import pytest

from campaigns.contracts import load_world
from campaigns.demo.synthetic import generate_world
from jobs.model_service import BASELINE_NAME, evaluate_models
from jobs.settings import load_events, load_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    directory = tmp_path_factory.mktemp("world")
    generate_world(directory, customers=800, seed=9)
    settings = load_settings(ROOT / "config", environ={"MKTG_THREADS": "1"})
    events = load_events(settings)
    world = load_world(directory, event_types=events.event_types)
    return evaluate_models(world, settings, events, names=["ease", "popularity_global"], k=5, resamples=500)


def test_the_best_popularity_model_is_the_baseline_and_every_other_model_gets_intervals(evaluated):
    results, info = evaluated
    by_name = {r.name: r for r in results}
    assert BASELINE_NAME not in by_name  # a popularity model was asked for: none added
    assert info["baseline"] == "popularity_global"
    ease = by_name["ease"]
    for metric in ("ndcg", "map"):
        d = ease.versus_baseline[metric]
        assert d["baseline"] == "popularity_global" and d["customers"] == info["test_customers"]
        assert d["low"] <= d["difference"] <= d["high"]
        expected = ease.result.overall[metric] - by_name["popularity_global"].result.overall[metric]
        assert d["difference"] == pytest.approx(expected, abs=1e-12)
        assert d["beats_baseline"] is (d["low"] > 0)
    assert ease.to_dict()["beats_popularity"] is ease.versus_baseline["ndcg"]["beats_baseline"]
    assert by_name["popularity_global"].versus_baseline == {}


def test_a_popularity_baseline_is_added_when_none_is_evaluated(tmp_path):
    directory = tmp_path / "w"
    generate_world(directory, customers=300, seed=4)
    settings = load_settings(ROOT / "config", environ={"MKTG_THREADS": "1"})
    events = load_events(settings)
    results, info = evaluate_models(
        load_world(directory, event_types=events.event_types), settings, events, names=["ease"], k=5, resamples=200
    )
    assert [r.name for r in results] == ["ease", BASELINE_NAME] and info["baseline"] == BASELINE_NAME
    assert set(results[0].versus_baseline) == {"ndcg", "map"}


def test_a_capped_evaluation_scores_a_fixed_sample_exactly_as_the_full_one_scores_those_customers(tmp_path):
    """``max_customers``: the sample is that many of the test customers, the same whatever their order, and each
    sampled customer's metrics are the ones the full evaluation gives that customer (a deterministic model)."""
    import polars as pl

    from jobs.model_service import sample_customers
    from recommender.columns import Columns

    directory = tmp_path / "w"
    generate_world(directory, customers=600, seed=5)
    settings = load_settings(ROOT / "config", environ={"MKTG_THREADS": "1"})
    events = load_events(settings)
    world = load_world(directory, event_types=events.event_types)
    [full], info = evaluate_models(world, settings, events, names=["popularity"], k=5, resamples=50)
    cap = info["test_customers"] // 3
    [capped], capped_info = evaluate_models(
        world, settings, events, names=["popularity"], k=5, resamples=50, max_customers=cap
    )
    assert capped_info["test_customers"] == info["test_customers"] and capped_info["evaluated_customers"] == cap
    sampled = capped.per_customer[Columns.Customer]
    assert sampled.n_unique() == cap == capped.result.overall["customers"]
    expected = full.per_customer.filter(pl.col(Columns.Customer).is_in(sampled.implode())).sort(Columns.Customer)
    assert capped.per_customer.sort(Columns.Customer).equals(expected)
    assert capped.result.overall["ndcg"] == pytest.approx(expected["ndcg"].mean(), abs=1e-12)

    frame = full.per_customer.select(Columns.Customer, pl.lit(1).alias("x"))
    one = sample_customers(frame, 10)
    other = sample_customers(frame.reverse(), 10)
    assert sorted(one[Columns.Customer]) == sorted(other[Columns.Customer])  # the ids decide, not the order
    assert one[Columns.Customer].to_list() == [c for c in frame[Columns.Customer] if c in set(one[Columns.Customer])]
