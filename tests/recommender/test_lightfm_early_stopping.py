"""LightFM early stopping: epochs chosen on a validation window carved by time, never past the as-of time.

Known rule in the data: every customer applies for the offer of its ``taste`` tag again and again, so the
validation NDCG reaches its ceiling within a few epochs and then stays flat: a cap of 60 epochs must not be
reached with patience 2.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from recommender.columns import Columns
from recommender.history import EventHistory
from recommender.idmap import IdMap
from recommender.interactions import build_interactions
from recommender.models import build_model

WEIGHTS = {"click": 1.0, "application": 3.0}
START = datetime(2026, 1, 1)
AS_OF = datetime(2026, 7, 1)
N_OFFERS = 8


def _world(n_customers: int = 400, seed: int = 5):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_customers):
        favourite = i % N_OFFERS
        t = START + timedelta(days=float(rng.uniform(0, 20)))
        while t < AS_OF + timedelta(days=90):
            offer = favourite if rng.random() < 0.8 else int(rng.integers(N_OFFERS))
            rows.append((f"c{i:03d}", f"o{offer}", "application", t))
            t += timedelta(days=float(rng.uniform(5, 30)))
    events = pl.DataFrame(
        rows, schema=[Columns.Customer, Columns.Product, Columns.EventType, Columns.EventTime], orient="row"
    ).with_columns(pl.col(Columns.EventTime).cast(pl.Datetime("us")))
    customers = pl.DataFrame(
        {
            Columns.Customer: [f"c{i:03d}" for i in range(n_customers)],
            Columns.Segment: "all",
            "taste": [f"t{i % N_OFFERS}" for i in range(n_customers)],
        }
    )
    offers = pl.DataFrame({Columns.Product: [f"o{j}" for j in range(N_OFFERS)], Columns.Family: "f"})
    return events, customers, offers


def _fit(events, customers, offers, **params):
    upto = events.filter(pl.col(Columns.EventTime) <= AS_OF)
    history = EventHistory(
        events=events.lazy(), weights=WEIGHTS, half_life_days=60.0, positive=("application",), as_of=AS_OF
    )
    matrix = build_interactions(
        upto.lazy(),
        weights=WEIGHTS,
        half_life_days=60.0,
        as_of=AS_OF,
        customers=IdMap.from_sorted(customers[Columns.Customer], name=Columns.Customer),
        products=IdMap.from_sorted(offers[Columns.Product], name=Columns.Product),
    )
    model = build_model(
        "lightfm",
        {"loss": "warp", "no_components": 8, "learning_rate": 0.1, "customer_columns": ["taste"], **params},
    )
    return model.fit(matrix, customers=customers, offers=offers, history=history, threads=1)


@pytest.fixture(scope="module")
def world():
    return _world()


def test_stops_before_the_cap_when_validation_plateaus(world):
    model = _fit(*world, epochs=60, patience=2, validation_days=60)
    stopping = model.meta["early_stopping"]
    assert stopping["epochs_run"] < 60
    # the stop rule: patience epochs after the best one, none of them better by min_delta
    assert stopping["epochs_run"] == stopping["best_epochs"] + 2
    scores = stopping["validation"]
    best = scores[stopping["best_epochs"] - 1]
    assert all(s <= best + model.min_delta for s in scores[stopping["best_epochs"] :])
    assert best > 0.8  # the favourite offer ranks first for most validation customers
    assert model.meta["epochs_fitted"] == stopping["best_epochs"]
    assert stopping["validation_start"] == (AS_OF - timedelta(days=60)).isoformat()


def test_never_reads_events_after_as_of(world):
    events, customers, offers = world
    later = events.filter(pl.col(Columns.EventTime) > AS_OF)
    assert later.height > 0
    with_future = _fit(events, customers, offers, epochs=30, patience=2)
    without = _fit(events.filter(pl.col(Columns.EventTime) <= AS_OF), customers, offers, epochs=30, patience=2)
    a, b = with_future.meta["early_stopping"], without.meta["early_stopping"]
    assert a["best_epochs"] == b["best_epochs"] and a["epochs_run"] == b["epochs_run"]
    np.testing.assert_allclose(a["validation"], b["validation"], atol=1e-4)


def test_validation_window_is_not_trained_on(world):
    """Dropping every event of the validation window changes no early-stopping epoch's training data, only the
    labels: with no positive left in the window there is nothing to validate on and the cap is used."""
    events, customers, offers = world
    start = AS_OF - timedelta(days=60)
    gap = events.filter((pl.col(Columns.EventTime) < start) | (pl.col(Columns.EventTime) > AS_OF))
    model = _fit(gap, customers, offers, epochs=7, patience=2)
    assert model.meta["early_stopping"]["reason"] == "no validation data"
    assert model.meta["epochs_fitted"] == 7


def test_without_patience_fits_exactly_the_configured_epochs(world):
    model = _fit(*world, epochs=3)
    assert "early_stopping" not in model.meta
    assert model.meta["epochs_fitted"] == 3


def test_finetuning_continues_the_early_stopped_model_on_all_the_data(world):
    events, customers, offers = world
    model = _fit(events, customers, offers, epochs=60, patience=2, finetune_epochs=2)
    stopping = model.meta["early_stopping"]
    assert model.meta["epochs_fitted"] == stopping["epochs_run"] + 2
    assert model.meta["refit_params"] == {"epochs": stopping["best_epochs"], "patience": 0}
    scores = model.score(customers)
    favourite = np.array([i % N_OFFERS for i in range(customers.height)])
    assert (scores.argmax(axis=1) == favourite).mean() > 0.9  # chance: 1/8
