"""The propensity model learns what happens next from an event history, without looking ahead.

Known rule in the data: a customer who clicks offer ``o{j}`` applies for ``o{j+1 mod 6}`` within two
weeks; ``student`` customers never apply for the credit family. The oracle is that rule, not the model.
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
from recommender.models import build_model, load_model
from recommender.models.propensity import PropensityModel

WEIGHTS = {"click": 1.0, "application": 3.0}
START = datetime(2026, 1, 1)
AS_OF = datetime(2026, 7, 1)
N_OFFERS = 6
FAMILY = ["credit", "credit", "deposit", "deposit", "insurance", "insurance"]


def _world(n_customers: int = 300, seed: int = 3):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_customers):
        t = START + timedelta(days=float(rng.uniform(0, 10)))
        j = int(rng.integers(N_OFFERS))
        while t < AS_OF + timedelta(days=60):
            rows.append((f"c{i:03d}", f"o{j}", "click", t))
            nxt = (j + 1) % N_OFFERS
            applied = t + timedelta(days=float(rng.uniform(1, 14)))
            rows.append((f"c{i:03d}", f"o{nxt}", "application", applied))
            t = applied + timedelta(days=float(rng.uniform(5, 40)))
            j = int(rng.integers(N_OFFERS))
    events = pl.DataFrame(
        rows, schema=[Columns.Customer, Columns.Product, Columns.EventType, Columns.EventTime], orient="row"
    ).with_columns(pl.col(Columns.EventTime).cast(pl.Datetime("us")))
    customers = pl.DataFrame(
        {
            Columns.Customer: [f"c{i:03d}" for i in range(n_customers)],
            Columns.Segment: "all",
            "occupation": ["student" if i % 3 == 0 else "employed" for i in range(n_customers)],
        }
    )
    offers = pl.DataFrame({Columns.Product: [f"o{j}" for j in range(N_OFFERS)], Columns.Family: FAMILY})
    return events, customers, offers


def _fit(events, customers, offers, threads=1, **params):
    history = EventHistory(
        events=events.lazy(), weights=WEIGHTS, half_life_days=30.0, positive=("application",), as_of=AS_OF
    )
    matrix = build_interactions(
        events.lazy(),
        weights=WEIGHTS,
        half_life_days=30.0,
        as_of=AS_OF,
        customers=IdMap.from_sorted(customers[Columns.Customer], name=Columns.Customer),
        products=IdMap.from_sorted(offers[Columns.Product], name=Columns.Product),
    )
    model = build_model(
        "propensity", {"window_days": 30, "windows": 4, "n_estimators": 80, "min_child_samples": 10, **params}
    )
    return model.fit(matrix, customers=customers, offers=offers, history=history, threads=threads)


def count_predicted_rows(monkeypatch) -> list[int]:
    """A one-item list that counts the rows every LightGBM prediction of a propensity model is handed."""
    predicted = [0]
    original = PropensityModel._lgb_threads

    def count(threads: int, rows: int) -> int:  # asked once per booster prediction, with its row count
        predicted[0] += rows
        return original(threads, rows)

    monkeypatch.setattr(PropensityModel, "_lgb_threads", staticmethod(count))
    return predicted


@pytest.fixture(scope="module")
def world():
    return _world()


@pytest.mark.parametrize("scope", ["all", "family"])
def test_next_offer_after_a_recent_click_ranks_first(world, scope):
    events, customers, offers = world
    model = _fit(events, customers, offers, scope=scope)
    assert model.meta["mode"] == "next_window"
    last = (
        events.filter((pl.col(Columns.EventTime) < AS_OF) & (pl.col(Columns.EventType) == "click"))
        .sort(Columns.EventTime)
        .group_by(Columns.Customer)
        .last()
    )
    recent = last.filter(pl.col(Columns.EventTime) >= AS_OF - timedelta(days=3))
    assert recent.height >= 10
    scores = model.score(customers.join(recent.select(Columns.Customer), on=Columns.Customer, how="semi"))
    ids = customers.join(recent.select(Columns.Customer), on=Columns.Customer, how="semi")[Columns.Customer].to_list()
    clicked = dict(recent.select(Columns.Customer, Columns.Product).iter_rows())
    expected = np.array([(int(clicked[c][1:]) + 1) % N_OFFERS for c in ids])
    assert (scores.argmax(axis=1) == expected).mean() >= 0.6  # chance: 1/6


def test_events_after_as_of_change_nothing(world, tmp_path):
    events, customers, offers = world
    upto = events.filter(pl.col(Columns.EventTime) < AS_OF)
    full = _fit(events, customers, offers)
    cut = _fit(upto, customers, offers)
    np.testing.assert_array_equal(full.score(customers), cut.score(customers))


def test_saved_as_lightgbm_text_and_reloaded(world, tmp_path):
    events, customers, offers = world
    model = _fit(events, customers, offers, scope="family")
    model.save(tmp_path / "m")
    boosters = sorted(p.name for p in (tmp_path / "m").glob("booster_*.txt"))
    assert boosters == ["booster_0.txt", "booster_1.txt", "booster_2.txt"]
    assert (tmp_path / "m" / "booster_0.txt").read_text().startswith("tree")
    loaded = load_model(tmp_path / "m")
    cold = pl.DataFrame({Columns.Customer: ["new"], Columns.Segment: ["all"], "occupation": ["student"]})
    everyone = pl.concat([customers, cold])
    np.testing.assert_array_equal(loaded.score(everyone), model.score(everyone))


def test_prediction_threads_follow_the_fit_and_do_not_change_scores(world, tmp_path, monkeypatch):
    """A model fitted here predicts with the fit's threads (the refresh's evaluation), a loaded one with one (campaign
    runs, Spark tasks); per-row scores are the same either way."""
    events, customers, offers = world
    model = _fit(events, customers, offers, threads=2)
    assert model.predict_threads == 2  # what fit() was given
    loaded_dir = model.save(tmp_path / "m")
    loaded = load_model(loaded_dir)
    assert loaded.predict_threads == 1
    used: list[int] = []

    def spy(threads: int, rows: int) -> int:
        used.append(threads)
        return threads  # no small-data gating: really predict with `threads`

    monkeypatch.setattr(PropensityModel, "_lgb_threads", staticmethod(spy))
    two, one = model.score(customers), loaded.score(customers)
    assert used and set(used) == {2, 1}
    np.testing.assert_allclose(two, one, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("scope", ["all", "family"])
def test_needed_pairs_alone_go_through_the_trees(world, scope, monkeypatch):
    """``score(needed=)``: the trees see only the needed pairs, which score as in a full scoring; the rest are -inf.
    Warm and cold customers both (a cold one has no activity rows)."""
    events, customers, offers = world
    model = _fit(events, customers, offers, scope=scope)
    cold = pl.DataFrame({Columns.Customer: ["new1", "new2"], Columns.Segment: "all", "occupation": "employed"})
    everyone = pl.concat([customers, cold])
    rng = np.random.default_rng(11)
    needed = rng.random((everyone.height, N_OFFERS)) < 0.4
    needed[0] = False  # a customer who needs nothing
    full = model.score(everyone)
    predicted = count_predicted_rows(monkeypatch)
    partial = model.score(everyone, needed=needed)
    assert predicted[0] == int(needed.sum())  # not one row more through the boosters
    np.testing.assert_allclose(partial[needed], full[needed], rtol=1e-6, atol=1e-7)
    assert np.isneginf(partial[~needed]).all()


def test_ranking_hands_propensity_only_its_candidates(world, monkeypatch):
    """rank_within_segments asks for the allowed, not-held pairs only, and ranks as a full scoring would."""
    from recommender.ranking import rank_within_segments, top_k

    events, customers, offers = world
    model = _fit(events, customers, offers)
    allowed = pl.DataFrame({Columns.Segment: "all", Columns.Offer: ["o0", "o1", "o2", "o4"]})
    held = pl.DataFrame({Columns.Customer: ["c001", "c002", "c002"], Columns.Product: ["o1", "o0", "o4"]})
    full = model.score(customers)
    predicted = count_predicted_rows(monkeypatch)
    recs = rank_within_segments(model, customers=customers, allowed=allowed, held=held, k=3)
    assert predicted[0] == customers.height * 4 - 3  # four allowed offers each, three held pairs among them
    # the oracle: the full scores, masked by the rule's text (allowed offers, minus what the customer holds)
    candidates = np.zeros_like(full, dtype=bool)
    candidates[:, [0, 1, 2, 4]] = True
    ids = customers[Columns.Customer].to_list()
    for customer, product in held.iter_rows():
        candidates[ids.index(customer), int(product[1:])] = False
    rows, cols, _, ranks = top_k(full, candidates, 3)
    expected = [(ids[r], f"o{c}", int(k)) for r, c, k in zip(rows, cols, ranks)]
    got = list(recs.select(Columns.Customer, Columns.Offer, Columns.Rank).iter_rows())
    assert got == expected


def test_tag_codes_of_known_unseen_null_and_missing_values(world):
    """The customer block's tag columns: a value's position among the distinct training values in sorted order;
    NaN (LightGBM's missing) for a value never seen in training, a null, or a column the frame lacks. Any dtype
    is read as its text, as in training."""
    events, customers, offers = world
    model = _fit(events, customers, offers)
    training = sorted(set(customers["occupation"]))  # the oracle: from the training frame, not from the model
    assert training == ["employed", "student"]
    asked = ["student", "employed", "pilot", None, "student"]
    frame = pl.DataFrame({Columns.Customer: [f"n{i}" for i in range(5)], Columns.Segment: "all", "occupation": asked})
    tag = list(model.tag_maps).index("occupation")
    block = model._customer_block(frame, None, None)
    expected = [training.index(v) if v in training else np.nan for v in asked]
    np.testing.assert_array_equal(block[:, tag], np.array(expected, np.float32))
    segment = list(model.tag_maps).index(Columns.Segment)
    np.testing.assert_array_equal(block[:, segment], np.zeros(5, np.float32))  # "all", the only segment
    without = model._customer_block(frame.drop("occupation"), None, None)
    assert np.isnan(without[:, tag]).all()
    as_categorical = model._customer_block(frame.with_columns(pl.col("occupation").cast(pl.Categorical)), None, None)
    np.testing.assert_array_equal(as_categorical, block)
